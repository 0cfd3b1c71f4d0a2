"""`hemalite convert`: options map onto ConvertConfig."""
from __future__ import annotations

import sys

import click

from hemalite.cli import Command, setup_logging
from hemalite.convert.export import ConvertConfig  # the click defaults are its defaults


@click.command("convert", cls=Command, epilog="A research and screening aid, not a diagnosis.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--float32", "want", flag_value="float32", multiple=True, help="float32 model.")
@click.option("--float16", "want", flag_value="float16", multiple=True, help="float16 weights.")
@click.option("--dynamic", "want", flag_value="dynamic", multiple=True,
              help="Dynamic-range (int8 weights, float activations).")
@click.option("--int8", "want", flag_value="int8", multiple=True,
              help="Full-integer int8 (weights and activations), calibrated.")
@click.option("--all", "all_variants", is_flag=True, help="Every variant.")
@click.option("--out", default=ConvertConfig.out, help="Output folder  [default: RUN_DIR/tflite]")
@click.option("--io", type=click.Choice(["uint8", "int8", "float32"]), default=ConvertConfig.io,
              show_default=True, help="int8 model's input/output type (uint8 = camera pixels).")
@click.option("--calib-size", type=int, default=ConvertConfig.calib_size, show_default=True,
              help="Representative images, stratified from the training split.")
@click.option("--calib-dir", default=ConvertConfig.calib_dir,
              help="Calibrate on images from this folder instead.")
@click.option("--calib-jitter", type=click.FloatRange(0, 1), default=ConvertConfig.calib_jitter,
              show_default=True, help="Share of calibration images put through training's "
              "acquisition jitter (other lamps, stains, objectives), so int8 ranges cover them.")
@click.option("--verify-split", type=click.Choice(["val", "test", "train"]),
              default=ConvertConfig.verify_split, show_default=True,
              help="Split the variants are checked on.")
@click.option("--threshold", type=float, default=ConvertConfig.threshold, show_default=True,
              help="Fail when int8 top-1 agreement with Keras is below this.")
@click.option("--force", is_flag=True, help="Keep the int8 file even below --threshold.")
@click.option("--seed", type=int, default=ConvertConfig.seed, show_default=True)
@click.option("--verbose", is_flag=True)
def convert_command(run_dir, want, all_variants, verbose, **options):
    """Convert RUN_DIR/model.keras to .tflite with embedded metadata, then verify.

    With no variant flag, all four are made. Each file carries its labels, input size and
    normalisation (standard TFLite metadata). A table compares every variant with the Keras
    model on the validation split; it is also written as verification.json.
    """
    setup_logging(verbose)
    from hemalite.files import native_noise_filtered

    with native_noise_filtered():  # TensorFlow's start-up lines
        import keras  # noqa: F401
    from hemalite.convert.export import convert

    variants = tuple(want) if want and not all_variants else ConvertConfig.variants
    cfg = ConvertConfig(run_dir=run_dir, variants=variants, **options)
    result = convert(cfg)
    calib = result["calibration"]
    if calib:
        click.echo(f"calibrated on {calib['size']} images from the {calib['source']}"
                   f" ({len(calib['skipped'])} skipped, {calib['jittered']} jittered)")
    click.echo(result["table"])
    for variant, path in result["paths"].items():
        if path.exists():
            click.echo(f"wrote {path}")
    if result["failed"]:
        click.echo(f"error: int8 top-1 agreement is below --threshold {cfg.threshold}; the "
                   "int8 file was not kept (try more --calib-size, or --force to keep it)"
                   if not cfg.force else
                   f"warning: int8 agreement below {cfg.threshold}, kept because of --force",
                   err=True)
        if not cfg.force:
            sys.exit(1)
