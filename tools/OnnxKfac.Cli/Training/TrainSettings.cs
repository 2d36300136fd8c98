namespace OnnxKfac.Cli.Training;

/// <summary>
/// Every setting of <c>onnx-kfac train</c>. Each is a flag and, with the same name in
/// snake_case, a key of the JSON config file (<c>--batch-size 64</c> = <c>"batch_size": 64</c>).
/// </summary>
internal static class TrainSettings
{
    private const SettingType S = SettingType.String, I = SettingType.Int, D = SettingType.Double, B = SettingType.Bool, L = SettingType.List;

    public static IReadOnlyList<Setting> All { get; } =
    [
        // model and loss
        new("model", S, "The ONNX model to fine-tune (the MODEL argument)") { Positional = true },
        new("loss", S, "Loss appended to the output: cross-entropy (default), mse, l1, bce-with-logits", "KIND"),
        new("output", S, "The model output the loss reads (default: the model's only output)", "NAME"),
        new("reduction", S, "Loss reduction: mean (default) or sum", "mean|sum"),
        new("ignore_index", I, "Cross-entropy: targets equal to this are ignored (default -100, as PyTorch)"),
        new("label_smoothing", D, "Cross-entropy label smoothing in [0, 1] (default 0)"),
        new("class_weights", S, "Cross-entropy class weights, comma-separated, one per class", "a,b,c"),
        new("trainable", L, "Train only initializers matching this glob (repeatable; * ? [abc]); default: every float initializer that reaches the loss", "GLOB"),
        new("frozen", L, "Keep initializers matching this glob fixed (repeatable)", "GLOB"),
        new("untie", L, "Split the tie of initializers matching this glob (repeatable): an exporter-merged initializer gives each module its own copy; a broken tie (a transposed copy) trains apart", "GLOB"),
        new("input_shape", L, "Per-example shape of a data input with dynamic dimensions besides the batch (repeatable)", "NAME=d1,d2"),

        // data
        new("train", S, "Training data: .csv/.tsv (label column), .npz (entries), or features .npy/.pb/IDX with --train-labels; several model inputs: .npz or INPUT=FILE,INPUT=FILE", "PATH"),
        new("train_labels", S, "Labels of --train for .npy, .pb and IDX files", "PATH"),
        new("val", S, "Validation data (same formats as --train); validated each epoch, best weights kept", "PATH"),
        new("val_labels", S, "Labels of --val for .npy, .pb and IDX files", "PATH"),
        new("val_split", D, "Hold out this fraction of --train for validation (seeded), e.g. 0.1", "FRACTION"),
        new("test", S, "Test data, evaluated before and after training and never used to choose weights", "PATH"),
        new("test_labels", S, "Labels of --test for .npy, .pb and IDX files", "PATH"),
        new("label_column", S, "CSV: the label column by header name or 0-based index (default: the last)", "NAME|INDEX"),
        new("npz_keys", S, "NPZ: the entries holding features and labels (default x,y; with --inputs or several model inputs only LABELS is read)", "X,Y"),
        new("inputs", L, "NPZ: the entry feeding each model input (default: the entry named like the input)", "INPUT=ENTRY,..."),
        new("scale", D, "Divide every feature by this first (255 maps bytes to [0,1]); default 1", "S"),
        new("normalize", S, "Then normalize: none (default), auto (per-channel mean/std of the training data) or MEAN,STD", "auto|none|MEAN,STD"),

        // optimizer
        new("optimizer", S, "kfac, sgd, adamw (default) or adam (torch.optim.Adam: weight decay as coupled L2, default 0)", "kfac|sgd|adamw|adam"),
        new("lr", D, "Learning rate (default 0.001; kfac 0.003); the kfac quadratic rule chooses its own"),
        new("momentum", D, "SGD momentum (default 0); kfac's KL-clip momentum (default 0.9)"),
        new("nesterov", B, "SGD: Nesterov momentum"),
        new("weight_decay", D, "Weight decay: decoupled for AdamW (default 0.01), L2 for SGD and Adam (default 0) and kfac (default 1e-5, also in kfac's damping)"),
        new("beta1", D, "AdamW first-moment decay (default 0.9)"),
        new("beta2", D, "AdamW second-moment decay (default 0.999)"),
        new("eps", D, "AdamW denominator epsilon (default 1e-8)"),
        new("schedule", S, "Learning-rate schedule: constant (default), step, cosine (over the planned updates), linear (to 0 over the planned updates, Hugging Face's; --warmup from 0), onecycle (OneCycleLR, --lr is the peak), plateau (ReduceLROnPlateau on the validation loss)", "constant|step|cosine|linear|onecycle|plateau"),
        new("step_size", I, "Step schedule: updates between decays (default one epoch)"),
        new("gamma", D, "Step schedule: decay factor (default 0.1)"),
        new("min_lr_factor", D, "Cosine schedule: final rate as a fraction of --lr (default 0)"),
        new("warmup", I, "Linear warm-up over this many updates before the schedule (default 0; with linear: Hugging Face's, from 0)"),
        new("pct_start", D, "Onecycle schedule: fraction of the updates spent rising to --lr (default 0.3)"),
        new("div_factor", D, "Onecycle schedule: the first rate is --lr / this (default 25)"),
        new("final_div_factor", D, "Onecycle schedule: the last rate is the first / this (default 1e4)"),
        new("plateau_factor", D, "Plateau schedule: multiply the rate by this on a plateau (default 0.1)"),
        new("plateau_patience", I, "Plateau schedule: validations without improvement before reducing (default 10)"),
        new("plateau_threshold", D, "Plateau schedule: relative improvement that counts (default 1e-4)"),
        new("plateau_cooldown", I, "Plateau schedule: validations after a reduction before counting again (default 0)"),
        new("min_lr", D, "Plateau schedule: the lowest rate (default 0)"),
        new("clip_grad_norm", D, "Clip gradients to this global L2 norm (kfac: the update actually taken)"),
        new("accumulate", I, "Average gradients over K batches per update (default 1)", "K"),
        new("kfac_update", S, "kfac: kl-clip (default: KL-clipped momentum at --lr) or quadratic (the paper's α and μ from the exact quadratic model)", "kl-clip|quadratic"),
        new("kfac_damping", D, "kfac: initial Tikhonov damping λ (default 0.01; the paper's autoencoders: 150 on their summed loss, ≈0.2 on a mean over pixels, with --kfac-damping-adapt lm)", "λ"),
        new("kfac_damping_adapt", S, "kfac: fixed (default) or lm (Levenberg–Marquardt on the reduction ratio every --kfac-adapt-every updates)", "fixed|lm"),
        new("kfac_adapt_every", I, "kfac: T₁, updates between Levenberg–Marquardt adjustments (default 5)"),
        new("kfac_damping_decay", D, "kfac: multiply the damping by this every --kfac-damping-every updates (a schedule; with fixed adaptation)"),
        new("kfac_damping_every", I, "kfac: updates between damping decays (default one epoch)"),
        new("kfac_min_damping", D, "kfac: lower bound of the damping (default 1e-8)"),
        new("kfac_max_damping", D, "kfac: upper bound of the damping (default 1e6)"),
        new("kfac_kl_clip", D, "kfac: κ of the KL clip (default 0.001)", "κ"),
        new("kfac_factor_decay", D, "kfac: running-factor decay, ε = min(1 - 1/k, decay) (default 0.95)"),
        new("kfac_stats_every", I, "kfac: T_cov, updates between factor-statistics updates (default 1)"),
        new("kfac_inverse_every", I, "kfac: T_inv, updates between inverse refreshes (default 20)"),
        new("kfac_stats_fraction", D, "kfac: fraction of each batch the statistics see (default 1)"),
        new("kfac_quadratic_fraction", D, "kfac, --kfac-update quadratic or --kfac-damping-adapt lm: fraction of each batch the Fisher products of the quadratic model (a forward and two Jacobian-vector products) see (default 1)"),
        new("kfac_fisher", S, "kfac: true (default: targets sampled from the model) or empirical (the real labels)", "true|empirical"),
        new("kfac_reduce_factors", S, "kfac, several ranks: when the ranks' factor statistics meet: refresh (default: each rank folds its own, the running factors are averaged before each inverse refresh) or every (every statistics update)", "refresh|every"),
        new("kfac_inverse", S, "kfac: how the damped factors are inverted: auto (default: cholesky when OpenBLAS loads, else ort), cholesky (?potrf + ?potri through OpenBLAS, libopenblas0-pthread) or ort (ONNX Runtime's LU, float32)", "auto|cholesky|ort"),
        new("kfac_inverse_precision", S, "kfac, Cholesky inverses: auto (default: float32 for a damped factor with (tr F + s)/s ≤ 1e4, which bounds its condition number, else float64), float32 or float64", "auto|float32|float64"),
        new("kfac_precondition", S, "kfac: how dense layers are preconditioned: auto (default: per update and layer the cheaper of dense and per-example; per-example needs --weight-decay 0, one batch per update and one rank), dense or per-example", "auto|dense|per-example"),
        new("kfac_fallback", S, "kfac: block of parameters in no layer: diagonal (default) or identity", "diagonal|identity"),
        new("kfac_block", L, "kfac: curvature block for parameters matching a glob, first match wins (repeatable): kronecker, embedding, diagonal, identity", "GLOB:KIND"),
        new("kfac_rollback", B, "kfac: on a non-finite loss return to the last good weights and raise the damping tenfold instead of stopping"),
        new("group", L, "Parameter group settings, first match wins (repeatable), e.g. \"net.1.*:lr=0.0001,wd=0\" or \"*.bias:frozen\"", "GLOB:lr=X,wd=X,momentum=X,frozen"),

        // loop
        new("epochs", I, "Passes over the training data (default 3)"),
        new("max_steps", I, "Stop after this many updates in all (with --epochs too: whichever comes first); not inherited by --resume") { RunSpecific = true },
        new("batch_size", I, "Examples per batch (default 32)"),
        new("drop_last", B, "Drop each epoch's last partial batch"),
        new("seed", I, "Seed of shuffling, the validation split and sampling (default 42): the same seed gives the same losses"),
        new("validate_every", I, "Validate every N updates instead of at each epoch end"),
        new("patience", I, "Stop when the validation loss has not improved for N validations"),
        new("no_keep_best", B, "Keep the last weights instead of those of the best validation"),
        new("skip_nonfinite", B, "Skip updates whose loss or gradient is NaN/inf instead of stopping"),

        // state
        new("checkpoint", S, "Write a checkpoint here (atomically) at the end and every --checkpoint-every updates", "PATH") { RunSpecific = true },
        new("checkpoint_every", I, "Checkpoint every N updates") { RunSpecific = true },
        new("resume", B, "Continue from --checkpoint (same trajectory as an uninterrupted run); settings default to the checkpoint's") { RunSpecific = true },
        new("export", S, "Write the fine-tuned model (the original graph with the new weights)", "OUT.onnx") { RunSpecific = true },
        new("export_with_preprocessing", B, "The exported model takes raw inputs: --scale and --normalize become a Mul and an Add at its input") { RunSpecific = true },

        // output
        new("report", S, "Write a JSON report: config, per-step losses, epochs, validations, timing, final metrics, gates", "PATH") { RunSpecific = true },
        new("log_csv", S, "Write a CSV row per update (step, epoch, loss, lr, grad norm, wall time) and per validation as training runs; default REPORT.steps.csv beside --report", "PATH") { RunSpecific = true },
        new("plot", S, "Write the loss curve: PNG or SVG, by the extension", "PATH") { RunSpecific = true },
        new("fail_if", L, "CI gate, e.g. \"val_accuracy<0.85\" (repeatable): exit 3 when true", "METRIC<X") { RunSpecific = true },
        new("top_k", I, "Classifiers: also measure the top-k accuracy of validation and test (e.g. 5)", "K"),
        new("device", S, "cpu (default), cuda or cuda:N (needs the GPU build)", "cpu|cuda[:N]") { RunSpecific = true },
        new("threads", I, "ONNX Runtime intra-op threads (default: one per core)") { RunSpecific = true },
        new("quiet", B, "Print only the summary") { RunSpecific = true },
        new("log_every", I, "Without a terminal: a log line every N updates (default 50)") { RunSpecific = true },
    ];
}
