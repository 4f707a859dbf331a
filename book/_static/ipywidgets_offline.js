/*
 * Glue between the ipywidgets HTML manager (@jupyter-widgets/html-manager 1.x, vendored in
 * _static/vendor/html-manager/) and this book's offline pages. myst-nb loads this file first on every page that
 * has saved widget state (it is the first entry of nb_ipywidgets_js in _config.yml), before require.js and
 * embed-amd.js. Two fixes:
 *
 * 1. Where the manager's font files are. embed-amd.js defines the AMD module
 *    "@jupyter-widgets/html-manager/dist/libembed-amd" and takes its webpack public path (the folder its CSS
 *    looks in for Font Awesome files) from that module's URL, which RequireJS resolves against the *page*
 *    (e.g. book/@jupyter-widgets/html-manager/dist/, which does not exist). A RequireJS `paths` entry maps the
 *    module id onto the vendored folder instead; it is given as the global `require` config object, which
 *    require.js reads when it loads (next script). Part of the bundle also honours
 *    window.__jupyter_widgets_assets_path__, so that is set to the same folder. The folder is found relative
 *    to this script's own URL, so it works at any page depth and under any base URL.
 *
 * 2. MathJax 3 on the same page. The widget code typesets labels with the MathJax 2 API,
 *    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), whenever window.MathJax exists, and throws
 *    "Cannot read properties of undefined (reading 'Queue')" under MathJax 3 (Sphinx loads MathJax 3).
 *    We add a MathJax.Hub.Queue that forwards to MathJax 3's typesetPromise, chained on startup.promise as
 *    the MathJax 3 docs ask. It is installed at DOMContentLoaded: MathJax is a deferred script, so it has
 *    replaced window.MathJax by then, and the manager renders widgets only at the `load` event.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (script && script.src) {
    var managerFolder = new URL("vendor/html-manager/", script.src).href;
    window.__jupyter_widgets_assets_path__ = managerFolder;
    var paths = { "@jupyter-widgets/html-manager/dist": managerFolder.replace(/\/$/, "") };
    if (typeof window.require === "function" && typeof window.require.config === "function") {
      window.require.config({ paths: paths }); // require.js is already on the page
    } else {
      window.require = { paths: paths }; // picked up by require.js as its initial configuration
    }
  }

  function installMathJax2Queue() {
    var mathjax = window.MathJax;
    if (!mathjax || !mathjax.startup || mathjax.Hub) {
      return; // no MathJax 3 on this page (widgets then skip typesetting), or a real MathJax 2
    }
    mathjax.Hub = {
      Queue: function () {
        var elements = [];
        Array.prototype.forEach.call(arguments, function (command) {
          // ["Typeset", MathJax.Hub, element]: the only form ipywidgets uses
          if (Array.isArray(command) && command[0] === "Typeset" && command[2]) {
            elements.push(command[2]);
          }
        });
        if (elements.length === 0) {
          return;
        }
        mathjax.startup.promise = mathjax.startup.promise
          .then(function () {
            return mathjax.typesetPromise(elements);
          })
          .catch(function (err) {
            console.error("MathJax could not typeset a widget label:", err);
          });
      },
    };
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", installMathJax2Queue);
  } else {
    installMathJax2Queue();
  }
})();
