"""``persam personalize``: learn a concept once, save it for later."""

from __future__ import annotations

import argparse

from persam.cli.common import add_model_options, check_inputs_exist, check_output_file, load_model
from persam.cli.references import add_reference_options, build_concept, checked_learning


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("personalize", help="learn a concept from reference photo(s) and save it (.persam)")
    add_reference_options(p)
    p.add_argument("--presence-threshold", type=float, metavar="S", help="override the calibrated presence threshold")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="concept file to write, e.g. dog.persam")
    add_model_options(p)
    p.set_defaults(func=run, concept=None)


def run(args: argparse.Namespace) -> int:
    from persam.session.concept_file import save_concept

    check_output_file(args.output)
    check_inputs_exist([*args.ref, *args.ref_mask, args.checkpoint])
    checked_learning(args)  # every refusal before the model loads
    model = load_model(args)
    concept = build_concept(args, model)
    path = save_concept(concept, args.output)
    extra = "" if concept.weights is None else " weights " + ", ".join(f"{w:.4f}" for w in concept.weights.tolist())
    print(f"wrote {path}: {concept.method} on {model.backend.name}, presence threshold {concept.threshold:.4f}{extra}")
    return 0
