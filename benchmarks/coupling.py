"""Does a finished CNN/ViT x SGD-M/AdamW study show the coupling? Read from the store, with errors.

The claim tested (the paper's headline, in its smallest form): once each pair is tuned, the ViT
is clearly better with the adaptive optimizer, the CNN is roughly indifferent, so the optimizers'
gap depends on the backbone. With ``gap(b) = top1(b, AdamW) - top1(b, SGD-M)`` at each pair's
best learning rate (:func:`bocb.analysis.optimizer_contrast`) and ``se`` its standard error:

- the ViT prefers the adaptive optimizer when ``gap(ViT) > 2 se``;
- the CNN is indifferent when ``|gap(CNN)| <= 2 se``, else it prefers one optimizer;
- the interaction ``gap(ViT) - gap(CNN)`` is clear when it exceeds 2 of its se.

Verdict: ``shows`` (ViT prefers adaptive, interaction clear, CNN indifferent), ``partly`` (ViT
prefers adaptive and the interaction is clear, but the CNN has a preference too), ``does not
show`` (otherwise). With one seed the errors are the test set's binomial errors only (seed
variation unmeasured: a lower bound), and the learning rate is chosen on the same test numbers;
the output says both. Every setting's accuracy is printed too, so a best lr at the edge of its
grid is visible.

    python benchmarks/coupling.py --store results.sqlite --study studies/gpu-check-cifar10.toml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bocb.analysis import optimizer_contrast
from bocb.analysis.results import selection_rule


def verdict(contrast, cnn: str, vit: str) -> dict[str, Any]:
    """The three sub-claims and the overall verdict (see the module doc) as plain values."""
    c, v = contrast.gap(cnn), contrast.gap(vit)
    inter, inter_se = contrast.interaction(vit, cnn)
    vit_adaptive = v.gap > 2 * v.se
    cnn_indifferent = abs(c.gap) <= 2 * c.se
    interaction_clear = inter > 2 * inter_se
    if vit_adaptive and interaction_clear:
        overall = "shows" if cnn_indifferent else "partly"
    else:
        overall = "does not show"
    return {
        "reference": contrast.reference, "alternative": contrast.alternative, "se_source": contrast.se_source,
        "gaps": {g.backbone: {"reference": g.reference, "alternative": g.alternative, "gap": round(g.gap, 3),
                              "se": round(g.se, 3)} for g in contrast.gaps},
        "interaction": round(inter, 3), "interaction_se": round(inter_se, 3),
        "vit_prefers_adaptive": vit_adaptive, "cnn_indifferent": cnn_indifferent,
        "interaction_clear": interaction_clear, "verdict": overall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--study", type=Path, required=True, help="the study file that was run")
    p.add_argument("--cnn", default="R-18")
    p.add_argument("--vit", default="DeiT-S")
    p.add_argument("--reference", default="SGD-M", help="the non-adaptive optimizer")
    p.add_argument("--alternative", default="AdamW", help="the adaptive optimizer")
    p.add_argument("--json-out", type=Path, default=None, help="write the result JSON to this file")
    args = p.parse_args()
    # Here, not at the top: the study parser pulls in torch and the zoo, which the verdict rule
    # (imported by the tests) does not need.
    from bocb.analysis.from_store import excluded, results_frame
    from bocb.store import SQLiteStore
    from bocb.study import load_study

    study = load_study(args.study)
    store = SQLiteStore(args.store)
    frame = results_frame(store, study.study_id)
    left_out = excluded(store, study.study_id)
    test_images = {(store.record(t) or {}).get("dataset", {}).get("test_images") for t in frame["trial_id"]}
    store.close()
    columns = ["backbone", "optimizer", "lr", "weight_decay", "top1", "status"]
    # The table first: it is worth having even when a pair is missing and no verdict can be given.
    print(frame.sort_values(columns[:3])[columns].to_string(index=False))
    for r in left_out.itertuples():
        print(f"not a result: {r.backbone} {r.optimizer} {r.status}: {r.reason}")
    if len(test_images) != 1 or None in test_images:
        raise SystemExit(f"trials were tested on different or unknown test-set sizes: {sorted(map(str, test_images))}")
    n_test = test_images.pop()
    contrast = optimizer_contrast(frame, args.reference, args.alternative, test_images=n_test)
    result = verdict(contrast, args.cnn, args.vit)
    result.update(
        test_images=n_test, seeds=sorted(frame["seed"].unique().tolist()), selection=selection_rule(frame),
        settings=frame[columns].to_dict("records"),
        not_results=left_out[["backbone", "optimizer", "status", "reason"]].to_dict("records"),
    )
    for g in contrast.gaps:
        print(f"{g.backbone}: {args.reference} {g.reference:.2f}, {args.alternative} {g.alternative:.2f}, "
              f"gap {g.gap:+.2f} +- {g.se:.2f}")
    chosen = "on the same numbers it reports" if result["selection"] == "same numbers" else "on a held-out seed"
    print(f"interaction ({args.vit} gap - {args.cnn} gap): {result['interaction']:+.2f} +- {result['interaction_se']:.2f}; "
          f"coupling {result['verdict']} (errors: {contrast.se_source}"
          f"{', one seed: seed variation unmeasured, a lower bound' if len(result['seeds']) == 1 else ''}; "
          f"lr chosen {chosen}; {len(left_out)} trial(s) not results)")
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
