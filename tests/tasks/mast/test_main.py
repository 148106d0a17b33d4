"""`python -m tasks.mast PARAMS_JSON`: JSON text of any length, or a file."""

from __future__ import annotations

import json

from schemas.stage import StageResult
from tasks.mast import __main__ as entry


def test_params_as_long_json_text_or_as_a_file(monkeypatch, tmp_path, capsys):
    seen = []

    def run_ingest(params):
        seen.append(params)
        return StageResult(stage="ingest", digest="d", cached=True, outputs={}, stats={})

    monkeypatch.setattr(entry, "run_ingest", run_ingest)
    monkeypatch.setattr(entry, "install_redaction", lambda: None)
    monkeypatch.setattr(entry.logging, "basicConfig", lambda **kw: None)
    # Longer than a file name may be: asking the file system about it fails with ENAMETOOLONG.
    ids = [str(i) for i in range(1, 1001)]
    text = json.dumps({"proposal_ids": ids, "data": str(tmp_path / "long")})
    assert entry.main([text]) == 0
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"data": str(tmp_path / "other")}))
    assert entry.main([str(path)]) == 0
    assert [(p.data, len(p.proposal_ids)) for p in seen] == [(str(tmp_path / "long"), 1000), (str(tmp_path / "other"), 0)]
    assert entry.main([str(tmp_path / "absent.json")]) == 2
    assert "cannot read the params file" in capsys.readouterr().err
