"""Prefect flow `evaluate`: fine-tuned vs base vs controls on the held-out split, plus the search index.

The task is cached on what determines the report: the dataset version's digest, every compared
model's checkpoint sha256, the ground truth's sha256, the params and the stage's code version
(resolved by tasks.evaluate.plan_evaluation without loading any model). Under it,
run_evaluate skips the work by itself when reports/<run>/manifest.json records the same inputs.

reports/<run>/ holds one report, the last configuration's: a cache record for another
configuration (split heldout, then test, then heldout again) names the files of the one since
evaluated, so a hit counts only while the manifest on disk has the record's digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows.caching import (
    RESULT_SERIALIZER,
    code_version,
    is_retryable,
    outputs_still_present,
    persisted_result_options,
    record_present_outputs,
)
from schemas.evaluate import EvaluateParams
from schemas.stage import StageResult
from storage.fs import read_text
from tasks.evaluate import EvaluationPlan, plan_evaluation, report_is_its_own, run_evaluate

CODE = ("flows.evaluate", "tasks.evaluate", "schemas.evaluate", "storage", "schemas.manifest", "schemas.vocabulary")


def evaluation_cache_key(params: EvaluateParams, plan: EvaluationPlan | None = None) -> str:
    """Checkpoint hashes + dataset digest + params + code: the same key means the same report."""
    plan = plan or plan_evaluation(params)
    blob = json.dumps({"inputs": plan.inputs, "config": plan.config, "data": params.data,
                       "code": code_version(*CODE)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _key_from_inputs(context: Any, inputs: dict[str, Any]) -> str:
    return str(inputs["cache_key"])


@task(name="evaluate-models", retries=1, retry_delay_seconds=[5], retry_condition_fn=is_retryable)
def evaluate_models(params: EvaluateParams, cache_key: str, plan: EvaluationPlan | None = None) -> StageResult:
    """Run the evaluation; `cache_key` is here so Prefect can key the result on it, and `plan` (the
    flow's, which the key came from) so the run, dataset and models are not resolved twice."""
    return record_present_outputs(run_evaluate(params, plan=plan), params.data)


def _task_options(params: EvaluateParams, refresh: bool) -> dict[str, Any]:
    return persisted_result_options(params.data, cache_key_fn=_key_from_inputs, refresh_cache=refresh)


def _publish(result: StageResult) -> None:
    report = json.loads(read_text(result.outputs["report"]))
    rows = []
    for name, m in report["models"].items():
        rows.append({"model": name, "i2t_top1": round(m["i2t_top1"], 4), "i2t_top10pct": round(m["i2t_top10pct"], 4),
                     "t2i_top10pct": round(m["t2i_top10pct"], 4),
                     "inbatch100_top10pct": round(m["inbatch100_top10pct"], 4),
                     "zeroshot_top5": (m.get("zeroshot") or {}).get("top5")})
    create_table_artifact(rows, key="evaluation-models",
                          description=f"{report['run']} on {report['dataset_version']} ({report['split']}, "
                                      f"{report['n_items']} images)")
    create_markdown_artifact(read_text(result.outputs["report_md"]), key="evaluation-report",
                             description=report["verdict"][:250])


@flow(name="evaluate", persist_result=True, result_serializer=RESULT_SERIALIZER)
def evaluate(params: EvaluateParams | None = None) -> StageResult:
    """Compare the fine-tuned model with the base model and controls; write report.json/.md and plots."""
    params = params or EvaluateParams()
    logger = get_run_logger()
    plan = plan_evaluation(params)
    key = evaluation_cache_key(params, plan)
    result = evaluate_models.with_options(**_task_options(params, params.refresh))(params, key, plan)
    if not (outputs_still_present(result, params.data) and report_is_its_own(result)):
        # A cache record outlived its files (reports or index deleted), or the report there is
        # another configuration's (or half-written): this one's is gone. Evaluate again.
        logger.info("cached evaluation names missing or replaced outputs; evaluating again")
        result = evaluate_models.with_options(**_task_options(params, True))(params, key, plan)
    _publish(result)
    logger.info("evaluation of %s: %s", result.outputs.get("run_name"), result.outputs["report"])
    return result
