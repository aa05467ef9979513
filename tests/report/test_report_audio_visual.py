"""The report's audio-visual section: present with the numbers of eval-full.json when the run has
cross-modal metrics, absent otherwise."""

from report_synthetic import make_run

from jem.report.build import build_report

AV = {"audio": {"knn": {"top1": 0.7733}, "linear": {"top1": 0.84}},
      "xmodal": {"a2v": {"r1": 0.5, "r5": 0.7667}, "v2a": {"r1": 0.49, "r5": 0.8267}},
      "raw": {"audio": {"knn": {"top1": 0.9333}}}}
def fast_run(tmp_path):
    """Synthetic inputs without the artefacts folder: only the metric sections are drawn."""
    return {**make_run(tmp_path), "artefacts": None}


RANDOM = {"audio": {"knn": {"top1": 0.7033}, "linear": {"top1": 0.7633}},
          "xmodal": {"a2v": {"r1": 0.1, "r5": 0.2367}, "v2a": {"r1": 0.1, "r5": 0.21}}}


def test_audio_visual_numbers_in_the_report(tmp_path):
    run = fast_run(tmp_path)
    run["ev"].update(AV)
    run["ev"]["random_init"] = {**run["ev"].get("random_init", {}), **RANDOM}
    md = build_report(tmp_path / "reports", **run).read_text()
    assert "## Audio and cross-modal retrieval" in md
    assert "| audio kNN top-1 | 0.7733 | 0.7033 | 0.9333 |" in md
    assert "| audio linear top-1 | 0.8400 | 0.7633 | — |" in md
    assert "| audio -> image recall@1 | 0.5000 | 0.1000 | — |" in md
    assert "| image -> audio recall@5 | 0.8267 | 0.2100 | — |" in md
    assert "Audio and cross-modal retrieval" in (tmp_path / "reports" / "report.html").read_text()


def test_no_audio_visual_section_for_an_image_method(tmp_path):
    md = build_report(tmp_path / "reports", **fast_run(tmp_path)).read_text()
    assert "cross-modal" not in md
