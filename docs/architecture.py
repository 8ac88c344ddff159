"""Draws docs/img/architecture.png: the package's layers and the path of one request through them.

    python docs/architecture.py
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).parent / "img" / "architecture.png"
REQUEST = 'scratchlm classify --model imdb-sentiment "A wonderful film."'

# (floor label, [(x, width, title, lines, on the request's path)]) from the top floor down; x and width in
# points of a 1000-wide layer band
FLOORS = [
    ("command line", [(90, 660, "cli/", ["__init__ (main, parser) · train · predict · export · serve · report",
                                        "every verb's parser and cmd_*"], True)]),
    ("what the verbs\nrun", [(90, 250, "stages/", ["pretrain · classify · seq2seq · distill", "quickstart · report",
                                                   "base: StageConfig, fit_and_report"], False),
                            (350, 130, "api.py", ["scratchlm.load", "-> Model"], False),
                            (490, 120, "export/", ["hf · onnx · gguf"], False),
                            (620, 130, "serve/", ["server · app", "routes · batching"], False)]),
    ("loading a\nmodel folder", [(90, 330, "model/folder.py: the one loader",
                                  ["name or path -> folder -> manifest -> task, kind",
                                   "-> network, tokenizer, weights (int8), LoRA"], True),
                                 (430, 160, "infer/classify.py", ["Classifier", ".predict_proba"], True),
                                 (600, 150, "infer/seq2seq.py", ["Seq2SeqModel", "infer/quantize.py"], False)]),
    ("engines", [(90, 230, "infer/", ["generate · beam (step + reorder)", "decode_pack"], False),
                 (330, 220, "tasks/", ["lm · classify · seq2seq · distill", "metrics"], True),
                 (560, 190, "train/", ["trainer: the Task loop", "optim · distributed · hardware"], False)]),
    ("networks and\ntheir folders", [(90, 400, "model/", ["transformer · heads · lora · int8 · kinds",
                                                          "checkpoint: atomic folders, sha256 manifest"], True),
                                     (500, 250, "baselines/", ["classical · rnn", "seq2seq_rnn · lead"], False)]),
    ("foundations", [(90, 400, "data/", ["registry · sources · clean · shards · prepare",
                                         "labeled · parallel · errors"], True),
                     (500, 130, "tokenizer.py", ["byte-level BPE"], True),
                     (640, 110, "config.py", ["recipes", "overrides"], False)]),
]
# the request: numbered stops (floor, x of the stop) and what happens there, line by line
STOPS = [(0, 600, ["cli.predict.cmd_classify parses --model", "and the text"]),
         (2, 510, ["infer.classify.load_classifier"]),
         (2, 380, ["model.folder.load_model: imdb-sentiment", "is not a path, so $SCRATCHLM_MODELS_DIR,",
                   "then models/; task classify, kind decoder"]),
         (4, 200, ["model.checkpoint.verify (the manifest);", "SequenceClassifier(Transformer); the",
                   "weights (an int8 folder: model.int8)"]),
         (5, 565, ["Tokenizer.load, checked against the", "fingerprint the model was trained with"]),
         (5, 200, ["Classifier.predict_proba: data.clean", "cleans the text as at training time"]),
         (3, 440, ["tasks.classify: encode_texts, then", "predict_proba in length-sorted batches"]),
         (0, 700, ['back in cmd_classify: print "pos  0.9731"'])]

BAND, GAP, TOP = 78, 10, 70


def floor_y(i: int) -> float:
    return TOP + i * (BAND + GAP)


def main() -> None:
    width, height = 1050, floor_y(len(FLOORS)) + 110
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(10, 24, "scratchlm: the layers, and one request through them", fontsize=14, weight="bold", va="center")
    ax.text(10, 48, f"Imports only point down (tests/test_architecture.py: no import cycles).  In red: {REQUEST}",
            fontsize=9, va="center", color="#34495e")
    for i, (label, boxes) in enumerate(FLOORS):
        y = floor_y(i)
        ax.add_patch(FancyBboxPatch((5, y), 772, BAND, boxstyle="square,pad=0", fc="#f4f6f8", ec="#b8c2cc"))
        ax.text(10, y + 14, label, fontsize=8, style="italic", color="#5d6d7e", va="top")
        for x, w, title, lines, on_path in boxes:
            x += 12
            ax.add_patch(FancyBboxPatch((x, y + 7), w, BAND - 14, boxstyle="round,pad=0,rounding_size=6",
                                        fc="#fdf2e9" if on_path else "white",
                                        ec="#c0392b" if on_path else "#5d6d7e", lw=1.4 if on_path else 1))
            ax.text(x + 8, y + 22, title, fontsize=10, weight="bold", va="center")
            for k, line in enumerate(lines):
                ax.text(x + 8, y + 40 + 14 * k, line, fontsize=8, va="center", color="#34495e")
    points = [(x + 12, floor_y(f) + 8) for f, x, _ in STOPS]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="#c0392b",
                                     lw=1.6, connectionstyle="arc3,rad=0.25", shrinkA=9, shrinkB=9))
    for n, (x, y) in enumerate(points, 1):
        ax.add_patch(FancyBboxPatch((x - 8, y - 8), 16, 16, boxstyle="circle,pad=0", fc="#c0392b", ec="none"))
        ax.text(x, y, str(n), fontsize=8, weight="bold", color="white", ha="center", va="center")
    ax.text(785, floor_y(0) + 4, "The request", fontsize=10, weight="bold", va="top")
    y = floor_y(0) + 26
    for n, (_, _, lines) in enumerate(STOPS, 1):
        ax.text(785, y, f"{n}", fontsize=8, weight="bold", color="#c0392b", va="top")
        for line in lines:
            ax.text(798, y, line, fontsize=7.5, va="top", color="#34495e")
            y += 12
        y += 7
    notes = ["The same loader serves scratchlm.load (api.py), every --model verb, quantize, export,",
             "serve, and a recipe's init: / teacher: (a path, or a published model name).",
             "",
             "A stage, e.g. scratchlm finetune classify: cli.train -> stages.classify.run: data.labeled, the init",
             "model (the loader), tasks.classify.ClassifyTask -> stages.base.fit_and_report (train.Trainer)",
             "-> <run>/model/ (model.checkpoint) -> scored -> report.json."]
    y0 = floor_y(len(FLOORS)) + 10
    for k, line in enumerate(notes):
        ax.text(10, y0 + 16 * k, line, fontsize=9, va="top", color="#2c3e50")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)


if __name__ == "__main__":
    main()
