# chapter -> [(prose_before, [function names], prose_after)] ; one per exercise, in order
S = {}
S["foundations"] = [
("Split the unfolded columns and the weights into `groups` blocks along the channels (`unfold` lays out its rows "
 "channel by channel, so each group's rows are contiguous) and let one batched `@` do every group at once:",
 ["conv2d_grouped_as_matmul"],
 "For a depthwise convolution `groups` equals the number of channels and each group is a single channel: the "
 "matmul degenerates into a $k^2$-term dot product per pixel and channel, which is why depthwise convolutions do "
 "so little arithmetic per byte read. `tests/test_solutions.py` checks the function against `F.conv2d`, depthwise "
 "and with two groups."),
("Per layer the products cost $2N^2d$ and the projections $4Nd^2$; the products cost more exactly when "
 "$2N^2d > 4Nd^2$, i.e. $N > 2d$.",
 ["attention_costs"],
 "At 256×256 only the first transformer ($N = 256 > 2 \\cdot 64$) spends more on the products; the second "
 "($64 < 160$) and third ($16 < 192$) spend more on the projections. At 512×512 the token counts quadruple "
 "($N = 1024, 256, 64$): the first two now cross ($1024 > 128$, $256 > 160$), the third still does not "
 "($64 < 192$). The test checks the two terms against `count_macs` of a `MultiHeadSelfAttention`."),
("Keep torchinfo's rules for convolutions and norms and fix the one for `Linear`: parameters times the number "
 "of tokens, `output.numel() // out_features`.",
 ["torchinfo_macs_every_token"],
 "On MobileViT-XXS at 256×256 this gives 330,818,424, below `count_macs`'s 407,364,096: the difference is the "
 "78,184,448 multiply-adds of the $QK^\\top$ and $AV$ products (no parameters, so no rule sees them), minus the "
 "terms torchinfo adds and `count_macs` does not, every `Linear` bias at every token and the $\\gamma, \\beta$ of "
 "every norm. The test checks that identity term by term."),
]
S["mobilevit"] = [
("Two blocks with $8 \\times 8$ patches: after the first, a pixel sees the pixels whose position inside their "
 "patch is within one of its own (the $3 \\times 3$ convolution, then attention across patches at the same "
 "position). The fusion convolution and the next block's $3 \\times 3$ convolution widen that band by one pixel "
 "each, so reach grows by a band per convolution and never by more. Config-B's *later* stages work on smaller maps "
 "with smaller patches ($4 \\times 4$ on the 16×16 map, $2 \\times 2$ on the 8×8 map), and there one block already "
 "reaches everything. The gradient method on the whole model, one pixel of the last feature map:",
 ["final_map_reach"],
 "returns 1.0 (every input pixel) for both configurations, so yes: config-B loses global reach *inside* its "
 "early blocks, not at the end of the network."),
("A plain ViT on the same map attends over one sequence of $HW$ tokens:",
 ["vit_attention_macs"],
 "MobileViT splits those tokens into $P$ sequences of $HW/P$, so its products cost $2(HW)^2d/P$: $P = 4$ times "
 "less, whatever the stage. For MobileViT-S's stage 3 ($32 \\times 32$ map at 256×256, $d = 144$) that is 302M "
 "against 75.5M multiply-adds per layer. The paper's §3.1 compares differently: a ViT's tokens are whole patches, "
 "so with $N$ patches its attention costs $O(N^2 d)$, and MobileViT, which attends among the same $N$ patches once "
 "for each of the $P$ pixel positions, costs $O(N^2 P d)$: $P$ times *more* in theory. It is cheaper in practice "
 "because it needs far fewer channels and layers."),
("Count the pixels one step holds with either anchor:",
 ["pixels_per_step"],
 "With the anchor at 256 (cvnets) a 320-pixel step holds 128 images (13.1M pixels) while the small sizes hold "
 "about 8.4M; with the anchor at 320 it holds 128 images too, but every size then holds about 13.1M pixels (the "
 "batch is never clamped, since no size is larger than the anchor). The paper's formula keeps the pixels per step "
 "closer to constant; it also makes the batches at the small sizes larger (512 images at 160), so there are "
 "fewer steps per epoch."),
]
S["poolformer"] = [
("In a block's slot, with and without the subtraction:",
 ["MaxPoolMixer"],
 "Neither count changes, and they equal the count with average pooling: a pooling layer (max or average) and "
 "the subtraction do no multiply-adds, so both `count_macs` and the fvcore rule see only the block's 1×1 "
 "convolutions. Multiply-adds therefore cannot tell PoolFormer's mixers apart at all, although each one reads and "
 "writes the whole feature map: for this model the cost that matters is memory traffic, which only a clock "
 "measures."),
("A spatial MLP mixer is one `Linear(N, N)` without bias, $N = HW$: $(HW)^2$ parameters per block.",
 ["spatial_mlp_params"],
 "At 224×224 the stages' maps are 56², 28², 14² and 7², so one mixer costs 9.83M, 615k, 38k and 2.4k parameters. "
 "A single mixer in stage 1 would hold almost as many parameters as the whole PoolFormer-S12 (11.9M), and S12 "
 "has two blocks there; in the last two stages the mixers are cheap, which is where the official hybrids "
 "(`metaformer_pppf`, `ppff`) put them. `count_params(poolformer.SpatialMlp((56, 56)))` gives the same 9,834,496."),
("Copy one model's weights into a model with the other head, give the norms non-trivial parameters (after "
 "initialisation they are 1 and 0, and the heads then agree too often to be interesting), and compare:",
 ["heads_disagree"],
 "The official head normalises the whole final map (GroupNorm with one group: one mean and variance over all "
 "channels and positions, then a per-channel scale and shift) and averages afterwards; timm's averages first and "
 "normalises the pooled vector over its channels (LayerNorm). Among the eight random inputs at least one gets "
 "different classes. When the final map is nearly constant over positions, its statistics over channels and "
 "positions are those of the pooled vector, so the two heads compute nearly the same thing and agree."),
]
S["topformer"] = [
("With stride 32 instead of 64 the pooled grid has $2 \\times 2 = 4$ times the tokens ($16 \\times 16$ instead of "
 "$8 \\times 8$ at 512×512), so the extractor's attention products, which grow with the square of the token "
 "count, cost 16 times as much; its 1×1 convolutions, linear in the tokens, 4 times as much. "
 "`flops_by_part(create_model(\"topformer_tiny\", pool_stride=32), (1, 3, 512, 512))` shows the extractor's "
 "share jumping. mmcv's rule counts the convolutions by hook, so it sees their 4× increase, but it has no rule "
 "for the matrix products inside attention (no module holds them), so the 16× growth of $QK^\\top$ and $AV$ is "
 "the part it misses.",
 [], ""),
("Keys only have to produce the attention *weights*: a dot product of width 16 per head is enough to rank "
 "tokens, and the softmax gives one number per pair whatever the width. The values are what the block passes on, "
 "so their width sets how much information flows. With `attn_ratio=1` the value projection and the output "
 "projection (which reads the concatenated values) shrink; with 4 they grow; the query and key projections do "
 "not change. `params_by_part(create_model(\"topformer_base\", attn_ratio=r))` shows it: only the extractor "
 "changes, 3.19M, 3.59M and 4.37M parameters for $r = 1, 2, 4$ (the test checks that only the extractor moves).",
 [], ""),
("Reuse a `SemanticInjection`'s layers and move the hard-sigmoid after the upsampling:",
 ["gate_after_upsampling"],
 "The two gates differ wherever the upsampled pre-activation crosses $-3$ or $3$ between two coarse pixels: the "
 "hard-sigmoid is not linear there, and interpolating then clipping is not clipping then interpolating (the test "
 "finds such an input). The official order is cheaper: the hard-sigmoid runs on the small global map "
 "($8 \\times 8$ tokens) instead of the full-resolution local map."),
]
S["seaformer"] = [
("With a mean, shuffling the columns leaves every row mean unchanged, so before the position embeddings are "
 "added the row branch's output is unchanged; with a max it is unchanged too (a max over a row does not care "
 "about order either). What is not unchanged even with the mean is the *column* branch: its tokens are the "
 "columns, and shuffling them permutes its output. The detail branch's $3 \\times 3$ depthwise convolution, "
 "which mixes neighbours, changes too. The position embeddings add a fixed value per row and per column, so "
 "after they are added the column branch is no longer merely permuted: a column moved elsewhere receives "
 "another column's embedding, which is the point of them.",
 [], ""),
("Count one SEA attention on the meta device and take the share of the batched matrix products:",
 ["sea_product_share"],
 "On square maps the share stays at about 0.9% (16² to 128²): the products cost $\\propto (H^2 + W^2)$ and "
 "everything else $\\propto HW$, and on a square $H^2 + W^2 = 2HW$, so the ratio is the same at every side. A "
 "long thin map with the same 16,384 pixels changes that: $32 \\times 512$ gives 6.6%, $16 \\times 1024$ 22% "
 "(the test checks both)."),
("With `attn_ratio=1` the values have as many channels as the keys ($d_v = d_k$): `to_v`, the row and column "
 "projections and the final projection shrink. The detail branch's width changes too, because it runs on the "
 "concatenation of q, k and v ($2hd_k + hd_v$ channels): narrower values make a narrower detail branch. Compare "
 "`count_params(SeaAttention(dim, key_dim, heads, attn_ratio=1))` with `attn_ratio=2`.",
 [], ""),
]
S["pp_mobileseg"] = [
("VIM can disagree only where a class that wins no low-resolution pixel wins between them. Make that class the "
 "runner-up everywhere, under a checkerboard of two winners whose logits average out between squares:",
 ["vim_disagreement"],
 "64% of the pixels differ at $8\\times$ upsampling. It requires an absent class that is never first at a "
 "low-resolution pixel but beats the interpolated winners in between, i.e. winners that alternate quickly and a "
 "strong, smooth second class; with the 4×4 checkerboard here the share cannot reach 100%, since each coarse "
 "pixel's own neighbourhood still goes to its winner."),
("Count PP-MobileSeg-Base with each fusion and subtract the model with SeaFormer's fusion (the ablation's "
 "row before +AAM):",
 ["fusion_steps"],
 "AAM (`fusion=\"aam\"`, 5,994,054 parameters in all) adds 0.137M; AAMSx8 (the default, 5,943,878) adds "
 "0.087M, which fits the ablation's +0.08M. Neither total is the README's 5.62M: the whole model is 0.32M "
 "above it with either fusion, a gap the claims table above records as a discrepancy."),
("Time both endings with `lessons.measure.measure_latency` on a 19-class logit map at 1/8 of $1024 \\times 512$. "
 "With few classes most of them are present in a street scene, so VIM interpolates nearly as many maps as the "
 "usual ending and adds the cost of `argmax` + `unique` at low resolution: it saves little or loses. The "
 "threshold of 30 classes is a rule of thumb for a phone; on a CPU the crossing point depends on how many "
 "classes are present, which random logits exaggerate (every class then wins somewhere).",
 [], ""),
]
S["hrvit"] = [
("A stripe of width $w$ on an $H \\times W$ map holds $wW$ tokens, and the stripes' products cost "
 "$\\lceil H/w \\rceil (wW)^2 C/2$ per direction, about $w H W^2 C/2$: linear in $w$, and growing with the cube of "
 "the side. Per branch of HRViT-b1 at $1024 \\times 1024$:",
 ["stripe_macs_by_branch"],
 "With the default widths $(1, 2, 7, 7)$ one product costs 537M, 268M, 257M and 64M multiply-adds per block on the "
 "1/4 to 1/32 branches. $(7, 7, 7, 7)$ makes the 1/4 branch's 3.8G (about seven times: 37 stripes of 7 rows, the padding included) and the 1/8 "
 "branch's 976M: the "
 "1/4 branch, with by far the most tokens, changes most. $(1, 2, 3, 9)$ leaves those two alone, cuts the 1/16 "
 "branch to 104M and raises the 1/32 branch to 85M (9 rows do not tile 32: four stripes, 36 rows with the "
 "padding). For the whole model, `lessons.measure.MmcvFlopCounter` with `hrvit.MMCV_RULES` adds these up over "
 "every block."),
("Every factorisation $C = pq$ gives $p^2 + q^2$ parameters (plus $p + q$ biases); $p^2 + q^2$ is smallest when "
 "$p$ and $q$ are as close to $\\sqrt{C}$ as possible:",
 ["des_params", "best_factorisation"],
 "For $C = 240$: $(15, 16)$, the official choice with its factors swapped, $256 + 225 = 481$ against "
 "$57{,}600$ for a dense layer. For b2's widths 48, 96, 240 and 384 the official rule $p = 2^{e - \\lfloor e/2 "
 "\\rfloor}$ always lands on a minimising pair (the test checks this against `count_params` of the "
 "`DiversityEnhancedShortcut`)."),
("Take a dense `FusionLayer` and keep, for each branch, only its own path and the one from the branch just "
 "above it:",
 ["upward_only_fusion"],
 "It has one downsampling path per branch and no upsampling path, so it costs less than the neighbour-only "
 "version (which also has the upward paths). Information then flows only from high to low resolution: nothing "
 "from 1/32 ever reaches 1/4. The neighbour-only version can pass it back, one branch per fusion layer, through "
 "its upward paths."),
]
S["comparison"] = [
("Time the network to its 1/8 logits, then the upsampling and argmax to $512 \\times 512$:",
 ["ending_share"],
 "On this book's machine the ending is about three quarters of the time with 150 classes and well under half "
 "with 19 (the numbers vary with the machine and its load; the test only checks that 150 classes make it a larger "
 "share than 19). The network's cost does not depend on the class count but the ending's is proportional to it."),
("Expect the larger model, MobileViT-S, to gain more: its convolutions and matrix products are big enough to "
 "split over two threads, while MobileViT-XXS spends a larger share of its time in per-operator overhead "
 "(dispatch, allocation, small tensors) that a second thread does not shorten and that the threads' "
 "synchronisation after each operator adds to. On a machine where another process holds the second core, both "
 "can get *slower*.",
 [], ""),
("Find the closest pair in multiply-adds, then split each one's count by operator:",
 ["closest_in_macs", "operator_shares"],
 "The pair is PoolFormer-S12 (1.81 GMACs) and MobileViT-S (2.00 GMACs). PoolFormer-S12 spends over 99% of its "
 "multiply-adds in convolutions (the rest is its classifier), nearly all of them dense 1×1 ones the CPU runs near "
 "its peak; MobileViT-S spends "
 "a share in `bmm` (attention products) and `addmm` (linear layers on many small sequences) and in depthwise "
 "convolutions, all of which run far below peak. That is why it takes about 1.5× PoolFormer-S12's time for 1.1× its "
 "multiply-adds."),
]
