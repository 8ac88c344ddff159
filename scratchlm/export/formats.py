"""The export formats and LoRA modes, apart from the exporters so that the CLI parser can list them without
importing torch."""

FORMATS = ("hf", "onnx", "gguf")
LORA_MODES = ("merge", "peft")
QUANTIZE_METHODS = ("int8",)  # scratchlm quantize: folders every verb loads (scratchlm.infer.quantize)
