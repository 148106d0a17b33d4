"""Evaluate like the paper (and beyond), and search the archive in plain language.

Library: no Prefect, no CLI here (flows/evaluate.py and flows/commands/evaluate.py wrap it).

Public API:
    run_evaluate(params: EvaluateParams, *, progress=None) -> StageResult     reports/<run>/, index/
    plan_evaluation(params) -> EvaluationPlan       run, dataset version, models, cache key inputs
    report_digest(report_dir) -> str | None         whose report is there (its manifest's digest)
    report_is_its_own(result) -> bool               a (cached) evaluate result's report is still there
    metrics: evaluate_retrieval, inbatch_accuracy, similarity_histogram, retrieval_curve, cutoff
    open_index(data, name=None) -> EmbeddingIndex;  write_index(data, ...)
    open_searcher(data, search_model_loader, index=None, device="auto") -> Searcher
        Searcher.search(query, k) -> list[SearchHit];  Searcher.describe(image_bytes, k) -> ClassRanking
    create_app(searcher) -> FastAPI;  serve(searcher, listen_socket(host, port))

The dataset and train stacks and FastAPI load only when used (torch loads with this package).
"""

from tasks.evaluate.index import EmbeddingIndex, SearchHit, open_index, write_index
from tasks.evaluate.metrics import (
    RetrievalCurve,
    RetrievalResult,
    cutoff,
    evaluate_retrieval,
    inbatch_accuracy,
    retrieval_curve,
    similarity_histogram,
)
from tasks.evaluate.models import list_runs, load_clip, resolve_run, search_model_loader
from tasks.evaluate.search import Searcher, open_searcher
from tasks.evaluate.stage import (
    EvaluationPlan,
    plan_evaluation,
    report_digest,
    report_is_its_own,
    run_evaluate,
)

__all__ = [
    "EmbeddingIndex",
    "EvaluationPlan",
    "RetrievalCurve",
    "RetrievalResult",
    "SearchHit",
    "Searcher",
    "cutoff",
    "evaluate_retrieval",
    "inbatch_accuracy",
    "list_runs",
    "load_clip",
    "open_index",
    "open_searcher",
    "plan_evaluation",
    "report_digest",
    "report_is_its_own",
    "resolve_run",
    "retrieval_curve",
    "run_evaluate",
    "search_model_loader",
    "similarity_histogram",
    "write_index",
]
