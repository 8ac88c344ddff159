"""``scratchlm quantize`` and ``scratchlm export``: a trained model in the forms it ships in (building the
parsers imports no torch)."""

from __future__ import annotations

import json
from pathlib import Path

from ..export.formats import FORMATS, LORA_MODES, QUANTIZE_METHODS


def add_parsers(subparsers) -> None:
    add_quantize_parser(subparsers)
    add_export_parser(subparsers)


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
