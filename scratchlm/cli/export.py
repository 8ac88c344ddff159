"""``scratchlm quantize`` and ``scratchlm export``: a trained model in the forms it ships in (building the
parsers imports no torch)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..export.formats import FORMATS, LORA_MODES, QUANTIZE_METHODS


def add_parsers(subparsers) -> None:
    add_quantize_parser(subparsers)
    add_export_parser(subparsers)
    add_publish_parser(subparsers)


def add_publish_parser(subparsers) -> None:
    sp = subparsers.add_parser("publish", help="copy a trained model to models/<name> (weights, tokenizer, config, "
                                              "model card, sha256 manifest), loadable by name")
    sp.add_argument("--model", required=True, help="run folder, checkpoint or model folder to publish")
    sp.add_argument("--name", required=True, help="the published name (e.g. base, imdb-sentiment)")
    sp.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "int8"),
                    help="weights as stored (default fp32); int8 for a folder made by `scratchlm quantize`")
    sp.add_argument("--max-mb", type=float, help="refuse weights larger than this many MB")
    sp.add_argument("--scores", help="JSON file: DATASET:SPLIT -> metrics of the published weights (from scratchlm "
                                     "evaluate --json); in the card and in config.json, re-checked by a slow test")
    sp.add_argument("--note", action="append", default=[], help="a paragraph for the card's status section")
    sp.add_argument("--command", action="append", default=[], help="a command that reproduces the model")
    sp.add_argument("--models-dir", help="where to publish (default: $SCRATCHLM_MODELS_DIR, else models/)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing published folder")
    sp.set_defaults(fn=cmd_publish)


def cmd_publish(args, extra=None) -> int:
    from ..export.publish import publish, run_sections
    from ..model import checkpoint as ckpt
    from ..model.folder import models_dirs

    source = Path(args.model)
    # the training run around the model: a run folder itself, <run>/checkpoints/step_N, or <run>/model
    run = source if (source / "checkpoints").is_dir() else \
        source.parent.parent if source.parent.name == "checkpoints" else source.parent
    config = ckpt.read_config(ckpt.resolve(source))
    scores = json.loads(Path(args.scores).read_text("utf-8")) if args.scores else None
    sections = []
    if args.note:
        sections.append(("Status", "\n\n".join(args.note)))
    sections += run_sections(run, config, scores, checkpoint=ckpt.resolve(source))
    extra_files = {}
    with tempfile.TemporaryDirectory() as tmp:
        from ..stages.report import plot_run_curves

        curve = plot_run_curves(run, args.name, Path(tmp) / "loss_curve.png",
                                until_step=ckpt.step_of(ckpt.resolve(source)))
        if curve is not None:
            extra_files["loss_curve.png"] = curve
            sections.append(("Loss curve", "![training and validation loss](loss_curve.png)"))
        if args.command:
            sections.append(("Reproduce", "```bash\n" + "\n".join(args.command) + "\n```"))
        root = Path(args.models_dir) if args.models_dir else models_dirs()[0]
        # the card's scores, machine-readable too: tests/test_published_models.py re-scores every published model
        folder = publish(source, args.name, root, dtype=args.dtype, sections=sections, overwrite=args.overwrite,
                         max_bytes=int(args.max_mb * 1e6) if args.max_mb else None, extra_files=extra_files,
                         extra_config={"scores": scores} if scores else None)
    size = (folder / "model.safetensors").stat().st_size
    print(f"published {folder} ({size / 1e6:.1f} MB {args.dtype}); load it with --model {args.name} or "
          f"scratchlm.load({args.name!r})")
    return 0


def add_export_parser(subparsers) -> None:
    sp = subparsers.add_parser("export", help="export a model to Hugging Face, ONNX or GGUF (llama.cpp)")
    sp.add_argument("--model", required=True, help="model folder or published name (LM, seq2seq or decoder "
                                                   "classifier)")
    sp.add_argument("--format", required=True, choices=FORMATS)
    sp.add_argument("--out", help="output folder (gguf: a .gguf file or a folder); default <model>-<format>")
    sp.add_argument("--adapter", help="a LoRA adapter folder (PEFT layout) to apply on top of --model")
    sp.add_argument("--lora", choices=LORA_MODES,
                    help="unmerged LoRA: 'peft' writes base + adapter (hf only, the hf default), 'merge' folds it "
                         "into the weights (onnx/gguf need it); 'peft' on a folder saved merged by finetune "
                         "--method lora takes its adapter back out")
    sp.add_argument("--int8", action="store_true", help="onnx: also write model.int8.onnx (ONNX Runtime)")
    sp.add_argument("--dtype", default="f32", choices=("f32", "f16"), help="gguf matrix type (default f32)")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.set_defaults(fn=cmd_export)


def cmd_export(args, extra=None) -> int:
    from ..export import export

    info = export(args.model, args.format, args.out, adapter=args.adapter, lora=args.lora, int8=args.int8,
                  dtype=args.dtype)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"wrote {info['path']}")
    for f in info.get("files", [])[1:]:
        print(f"wrote {f}")
    if info.get("adapter"):
        print(f"wrote {info['adapter']} (LoRA adapter, PEFT layout)")
    print(f"load: {info['load']}")
    for note in info.get("notes", []):
        print(f"note: {note}")
    return 0


def add_quantize_parser(subparsers) -> None:
    sp = subparsers.add_parser("quantize", help="int8 weights for CPU inference (a model folder every verb loads)")
    sp.add_argument("--model", required=True,
                    help="fp32 model folder or published name (LM, seq2seq or decoder classifier)")
    sp.add_argument("--method", default="int8", choices=QUANTIZE_METHODS)
    sp.add_argument("--out", help="output folder (default: <model>-int8 beside the model)")
    sp.set_defaults(fn=cmd_quantize)


def cmd_quantize(args, extra=None) -> int:
    from ..infer.quantize import quantize_folder
    from ..model.folder import resolve_model
    from ..model.int8 import choose_backend

    src = resolve_model(args.model)
    out = Path(args.out) if args.out else src.with_name(f"{src.name}-{args.method}")
    folder = quantize_folder(src, out, args.method)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    print(f"wrote {folder} ({size(folder) / 1e6:.2f} MB, fp32 {size(src) / 1e6:.2f} MB: "
          f"{size(src) / size(folder):.2f}x smaller); int8 kernel here: {choose_backend(None, str(src))}")
    return 0
