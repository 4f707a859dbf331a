"""Copy the JavaScript the built site needs from node_modules/ into book/_static/vendor/ (git-ignored).

Why: a stock Jupyter Book page loads MathJax, RequireJS and the ipywidgets HTML manager from CDNs. This book's
site must work with no network (tests/site/test_pages.py aborts every request that leaves 127.0.0.1), so
`npm ci` installs pinned copies (package.json / package-lock.json) and this script puts the files the pages
reference, with the relative layout they expect, under book/_static/vendor/:

  vendor/mathjax/         the whole MathJax 3 es5/ tree: tex-mml-chtml.js finds its CHTML fonts
                          (output/chtml/fonts/woff-v2/) and autoloaded TeX extensions (input/tex/extensions/)
                          by paths relative to itself, so the tree is copied as is.
  vendor/requirejs/       require.js, which embed-amd.js needs (it registers itself as an AMD module).
  vendor/html-manager/    embed-amd.js of @jupyter-widgets/html-manager plus the font files webpack emitted next
                          to it (Font Awesome, used by widget icons), found relative to the script's own URL.

_config.yml points `mathjax_path` and `nb_ipywidgets_js` at these files. The script refuses to copy a
html-manager whose major version differs from the one ipywidgets declares (`__html_manager_version__`), since
saved widget state from ipywidgets 8 only renders with the matching manager.

Usage: .venv/bin/python tools/vendor_assets.py   (run by `make book`; needs `npm ci` first)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "book" / "_static" / "vendor"

# Files webpack emits beside embed-amd.js: fonts referenced from the bundled CSS by hashed names.
FONT_SUFFIXES = {".woff2", ".woff", ".ttf", ".eot", ".svg"}


def package_version(name: str) -> str:
    """Version of an installed npm package, read from its package.json."""
    manifest = NODE_MODULES / name / "package.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is missing: run `npm ci` (or `make book`) first.")
    return json.loads(manifest.read_text())["version"]


def check_html_manager_matches_ipywidgets(installed: str) -> None:
    """Fail if the html-manager's major version is not the one the installed ipywidgets declares."""
    try:
        from ipywidgets import _version
    except ImportError:  # run with a Python that has no ipywidgets: nothing to compare against
        print("vendor_assets: ipywidgets not importable here; skipping the html-manager version check")
        return
    wanted = _version.__html_manager_version__  # e.g. "^1.0.1" for ipywidgets 8
    wanted_major = wanted.lstrip("^~=v").split(".")[0]
    if installed.split(".")[0] != wanted_major:
        raise SystemExit(
            f"@jupyter-widgets/html-manager {installed} is installed but ipywidgets {_version.__version__} "
            f"needs {wanted}; change the version in package.json and run `npm install` to update the lock file."
        )


def copy_tree(src: Path, dst: Path) -> int:
    """Copy a directory tree; return the number of files copied."""
    shutil.copytree(src, dst)
    return sum(1 for p in dst.rglob("*") if p.is_file())


def main() -> int:
    versions = {name: package_version(name) for name in ("mathjax", "requirejs", "@jupyter-widgets/html-manager")}
    if not versions["mathjax"].startswith("3."):
        raise SystemExit(f"mathjax {versions['mathjax']} installed; _config.yml is written for MathJax 3.")
    check_html_manager_matches_ipywidgets(versions["@jupyter-widgets/html-manager"])

    # Start clean so a file dropped upstream does not linger and hide a broken path.
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    VENDOR.mkdir(parents=True)

    n_mathjax = copy_tree(NODE_MODULES / "mathjax" / "es5", VENDOR / "mathjax")
    shutil.copy2(NODE_MODULES / "mathjax" / "LICENSE", VENDOR / "mathjax" / "LICENSE")

    (VENDOR / "requirejs").mkdir()
    shutil.copy2(NODE_MODULES / "requirejs" / "require.js", VENDOR / "requirejs" / "require.js")

    manager_dist = NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist"
    manager_dst = VENDOR / "html-manager"
    manager_dst.mkdir()
    shutil.copy2(manager_dist / "embed-amd.js", manager_dst / "embed-amd.js")
    fonts = [p for p in manager_dist.iterdir() if p.suffix in FONT_SUFFIXES]
    for font in fonts:
        shutil.copy2(font, manager_dst / font.name)
    for license_name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        license_file = manager_dist.parent / license_name
        if license_file.is_file():
            shutil.copy2(license_file, manager_dst / license_name)

    (VENDOR / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n")
    print(
        f"vendor_assets: {VENDOR.relative_to(ROOT)}: mathjax {versions['mathjax']} ({n_mathjax} files), "
        f"requirejs {versions['requirejs']}, html-manager {versions['@jupyter-widgets/html-manager']} "
        f"(embed-amd.js + {len(fonts)} fonts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
