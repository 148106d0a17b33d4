"""`python -m tasks.train`: every TrainParams field is an option; errors are one line."""

from __future__ import annotations

from schemas.train import TrainParams
from tasks.train.__main__ import build_parser, main


def test_every_param_is_an_option():
    parser = build_parser()
    args = vars(parser.parse_args(["--preset", "paper", "--batch-size", "256", "--shuffled-pairs", "--no-resume",
                                   "--fixed-temperature", "0.217"]))
    assert set(TrainParams.model_fields) <= set(args)
    given = {k: v for k, v in args.items() if v is not None and k in TrainParams.model_fields}
    params = TrainParams(**given)
    assert (params.batch_size, params.shuffled_pairs, params.resume, params.fixed_temperature) == (256, True, False,
                                                                                                   0.217)


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--model", "ViT-Nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tasks.train: error: unknown model name 'ViT-Nope'"), err
    assert main(["--data", str(tmp_path), "--steps", "0"]) == 1
    assert capsys.readouterr().err.strip() == "tasks.train: error: steps: Input should be greater than or equal to 1"
