"""From call 1's smoke runs (3 in parallel, 2 epochs on a subset): seconds per full epoch under the
same contention, and with --budget S the number of epochs that fit in S seconds of training."""
import json, sys, pathlib
args = sys.argv[1:]
budget = None
if args[0] == "--budget":
    budget, args = float(args[1]), args[2:]
FULL_TRAIN = 10691  # training images of a full run (11,879 minus the 10% validation)
per_img = []
for d in map(pathlib.Path, args):
    hist = json.loads((d / "history.json").read_text())
    n = len(json.loads((d / "split.json").read_text())["train"])
    per_img.append(hist[-1]["seconds"] / n)
t_epoch = max(per_img) * FULL_TRAIN + 5  # + validation, checkpoint, worker start
if budget is None:
    print(f"seconds per image (epoch 2, per run): {[round(p * 1000, 3) for p in per_img]} ms; full epoch ~{t_epoch:.1f} s")
else:
    print(max(4, min(30, int(budget // t_epoch))))
