"""`hemalite train`: click options map one to one onto TrainConfig."""
from __future__ import annotations

import click

from hemalite.cli import Command, setup_logging
from hemalite.train.fit import TrainConfig  # the click defaults are its defaults


@click.command("train", cls=Command, epilog="A research and screening aid, not a diagnosis.")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory for the model, manifests, config and metrics.")
@click.option("--arch", type=click.Choice(["mobilenetv2", "cnn"]), default=TrainConfig.arch,
              show_default=True, help="MobileNetV2 transfer learning, or the paper's 3-conv baseline.")
@click.option("--weights", default=TrainConfig.weights, show_default=True,
              help="'imagenet' (Keras download), 'none', or a local .weights.h5 file made "
                   "for the same --alpha.")
@click.option("--alpha", type=float, default=TrainConfig.alpha, show_default=True,
              help="MobileNetV2 width; pretrained weights must be for this width.")
@click.option("--image-size", type=int, default=TrainConfig.image_size, show_default=True,
              help="Input side in pixels.")
@click.option("--work-size", type=click.IntRange(min=32), default=TrainConfig.work_size,
              help="MobileNetV2: the side the backbone sees, the (grounded) input resized "
                   "inside the model, e.g. 288: larger cells for the ImageNet features at "
                   "(work size / image size)^2 the compute. Default: the image size.")
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True,
              help="Max epochs of the head phase (single phase without pretrained weights).")
@click.option("--fine-tune-epochs", type=int, default=TrainConfig.fine_tune_epochs,
              show_default=True,
              help="Max epochs fine-tuning the top of the backbone (0 to skip).")
@click.option("--fine-tune-from", default=TrainConfig.fine_tune_from, show_default=True,
              help="First backbone layer to unfreeze in fine-tuning (Conv1 = all of it; "
                   "make model: block_2_expand).")
@click.option("--lr-schedule", type=click.Choice(["plateau", "cosine"]),
              default=TrainConfig.lr_schedule, show_default=True,
              help="Fine-tuning's learning rate: cut x0.3 when the validation loss stalls, or "
                   "a cosine decay every step to 1 % of it by the last epoch (fewer epochs).")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True)
@click.option("--fine-tune-learning-rate", type=float, default=TrainConfig.fine_tune_learning_rate,
              show_default=True)
@click.option("--dropout", type=float, default=TrainConfig.dropout, show_default=True)
@click.option("--ema", type=click.FloatRange(0.0, 1.0, max_open=True), default=TrainConfig.ema,
              show_default=True,
              help="Fine-tuning (the single phase without pretrained weights) keeps an "
                   "exponential moving average of the weights with this momentum (e.g. 0.99) "
                   "and validates and saves the average; 0 turns it off.")
@click.option("--patience", type=int, default=TrainConfig.patience, show_default=True,
              help="Early-stopping patience.")
@click.option("--val-fraction", type=float, default=TrainConfig.val_fraction, show_default=True)
@click.option("--test-fraction", type=float, default=TrainConfig.test_fraction, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=TrainConfig.seed, show_default=True,
              help="Seeds the train / validation / test split, and training's randomness "
                   "unless --train-seed is given.")
@click.option("--train-seed", type=click.IntRange(min=0), default=TrainConfig.train_seed,
              help="Seeds initialisation, shuffling and augmentation only: another run of "
                   "a recipe on the same split.")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multiworker"]),
              default=TrainConfig.distribute, show_default=True,
              help="tf.distribute: mirrored = all local GPUs (else CPUs), multiworker = TF_CONFIG.")
@click.option("--augment/--no-augment", default=TrainConfig.augment, show_default=True,
              help="Rotation, flips, contrast and Gaussian noise while fine-tuning.")
@click.option("--ground/--no-ground", default=TrainConfig.ground, show_default=True,
              help="Inside the model, set everything outside the leukocyte stain mask to one "
                   "grey, so the decision comes from the cells and not the slide background.")
@click.option("--acquisition/--no-acquisition", default=TrainConfig.acquisition, show_default=True,
              help="While fine-tuning, also vary lamp brightness, contrast, stain hue, "
                   "saturation, focus, JPEG quality and magnification (another lab's microscope).")
@click.option("--stain-jitter", type=click.FloatRange(0.0, 1.0), default=TrainConfig.stain_jitter,
              show_default=True,
              help="With --acquisition: the share of images whose stain balance is redrawn "
                   "(blue-violet stain x0.67-1.5, pink / the same, by colour deconvolution).")
@click.option("--consistency", type=click.FloatRange(min=0.0), default=TrainConfig.consistency,
              show_default=True,
              help="While fine-tuning, show each image as two independent jitters in the same "
                   "batch and add this weight x the Jensen-Shannon divergence of the two "
                   "predictions to the loss, so another lab's lamp, focus or objective is "
                   "taught not to move the answer; half as many distinct images per step. "
                   "0 turns it off (2 and 10 both did worse than 0 in 24 minutes: "
                   "benchmarks/reports/grounding_ablation.md).")
@click.option("--teacher", default=None, metavar="RUN",
              help="Distil from a finished run (its folder or model.keras), e.g. a larger "
                   "input size: fine-tuning also learns the teacher's probabilities on each "
                   "clean training image, under every jitter, so a faster model can keep a "
                   "larger one's answers.")
@click.option("--distill", type=click.FloatRange(0.0, 1.0), default=TrainConfig.distill,
              show_default=True,
              help="With --teacher: the teacher's share of the loss (the labels' is 1 - it).")
@click.option("--progress/--no-progress", default=TrainConfig.progress, show_default=True)
@click.option("--force", is_flag=True,
              help="Delete what an earlier run left in --out (model, splits, tflite/...) and "
                   "train afresh.")
@click.option("--verbose", is_flag=True, help="Log each step.")
def train_command(data_dir, out, verbose, **options):
    """Train on DATA_DIR, one sub-folder per class (labels = sorted folder names).

    Writes to --out: model.keras, config.json, splits/{train,val,test}.csv, history.json,
    metrics.json and confusion_matrix.png. Running the same command again after an
    interruption resumes where it stopped; after a finished run it does nothing. An --out
    holding a run made with other options is refused (--force replaces it).
    """
    setup_logging(verbose)
    from hemalite.files import native_noise_filtered
    from hemalite.train.fit import train

    with native_noise_filtered():  # TensorFlow's start-up lines (twice: two libraries)
        import keras  # noqa: F401

    cfg = TrainConfig(data_dir=data_dir, out=out, **options)
    result = train(cfg)
    if result.get("already_complete"):
        click.echo(f"already complete: {out} holds a finished run with these options "
                   "(--force to retrain)")
        return
    split = result["split"]
    click.echo(f"images: {split['images']} (train {split['train']}, val {split['val']}, "
               f"test {split['test']}); duplicate groups kept together: "
               f"{split['duplicate_groups']}; skipped: {len(split['skipped'])}")
    for line in split["skipped"]:
        click.echo(f"skipped: {line}", err=True)
    if "test" in result:
        t = result["test"]
        click.echo(f"test accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}  "
                   f"AUC-ROC {t['auc_ovr_macro'] or float('nan'):.4f}  ({t['n']} images)")
    if result["chief"]:
        click.echo(f"wrote {out} in {result['seconds']:.0f} s")
    else:  # a non-chief worker's files were temporary
        click.echo(f"worker done in {result['seconds']:.0f} s; the chief writes {out}")
