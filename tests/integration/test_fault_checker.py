"""tools/fault_run.py's checker, analyze(), shown to fail: one synthetic
history or observation per verdict (lost, stale, phantom, diverged,
unexpected exit, protocol error, authentication, convergence, a fault with
no effect, too little acknowledged), each of which must be reported, and a
clean one that must pass. No nodes run here."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tools"))
import fault_run  # noqa: E402
from fault_run import analyze, passed, rows_diverge, VERDICTS  # noqa: E402


def put(client, key, value, t1, t2, outcome="ok", version=None):
    return dict(client=client, op="put", key=key, value=value, t1=t1, t2=t2,
                code=0 if outcome == "ok" else -12, outcome=outcome,
                version=version if version is not None else int(t2 * 1000))


def get(client, key, value, t1, t2, version=0, outcome="ok"):
    ev = dict(client=client, op="get", key=key, t1=t1, t2=t2,
              code=0 if outcome == "ok" else -4, outcome=outcome,
              version=version)
    if outcome == "ok":
        ev["value"] = value
    return ev


def clean():
    """Two clients; unique keys, a register each, a shared register."""
    hist = [put(0, "u-0-1", "0:1", 0.0, 0.1),
            put(1, "u-1-1", "1:1", 0.0, 0.1),
            put(0, "r-0", "1", 0.2, 0.3),
            put(0, "r-0", "2", 0.4, 0.5),
            get(0, "r-0", "2", 0.6, 0.7, 500),
            put(1, "s-0", "1:1", 0.2, 0.3, version=300),
            put(0, "s-0", "0:1", 0.4, 0.5, version=500),
            get(1, "s-0", "0:1", 0.6, 0.7, version=500),
            get(1, "r-1", None, 0.8, 0.9, outcome="not found")]
    seen = dict(final={"u-0-1": ("0:1", 100), "u-1-1": ("1:1", 100),
                       "r-0": ("2", 500), "s-0": ("0:1", 500)},
                diverged=[], counters={}, exits={}, logs={0: "", 1: ""})
    return hist, seen


def verdicts(hist, seen, **kw):
    kw.setdefault("clients", 2)
    kw.setdefault("min_acked", 1)
    kw.setdefault("converged_s", 1.0)
    r = analyze(hist, seen, **kw)
    return {k for k in VERDICTS if r[k]}, r


def test_checker_passes_a_clean_history():
    hist, seen = clean()
    bad, r = verdicts(hist, seen)
    assert not bad and passed(r), r


def test_checker_reports_a_lost_unique_write():
    hist, seen = clean()
    seen["final"]["u-1-1"] = (None, 0)
    assert verdicts(hist, seen)[0] == {"lost"}


def test_checker_reports_a_register_that_went_back():
    hist, seen = clean()
    seen["final"]["r-0"] = ("1", 300)  # the acknowledged "2" is gone
    assert verdicts(hist, seen)[0] == {"lost"}


def test_checker_reports_a_shared_register_below_an_acked_version():
    hist, seen = clean()
    seen["final"]["s-0"] = ("1:1", 300)
    assert verdicts(hist, seen)[0] == {"lost"}


def test_checker_reports_a_shared_write_that_beat_a_later_one():
    # Both acknowledged; "1:2" began after "0:2" was answered, so it must
    # win, whatever versions a fast clock gave them.
    hist, seen = clean()
    hist += [put(0, "s-1", "0:2", 1.0, 1.1, version=9000),
             put(1, "s-1", "1:2", 1.2, 1.3, version=2000)]
    seen["final"]["s-1"] = ("0:2", 9000)
    assert verdicts(hist, seen)[0] == {"lost"}


def test_checker_reports_a_stale_register_read():
    hist, seen = clean()
    hist.append(get(0, "r-0", "1", 0.8, 0.9, 300))  # after "2" was acked
    bad, r = verdicts(hist, seen)
    assert bad == {"stale"} and r["stale"][0]["expected_at_least"] == 2


def test_checker_reports_a_stale_shared_read():
    hist, seen = clean()
    hist.append(get(1, "s-0", "1:1", 0.8, 0.9, version=300))
    assert verdicts(hist, seen)[0] == {"stale"}


def test_checker_reports_a_value_never_written():
    hist, seen = clean()
    hist.append(get(0, "r-0", "7", 0.8, 0.9, 900))
    assert verdicts(hist, seen)[0] == {"phantom"}


def test_checker_reports_a_final_value_never_written():
    hist, seen = clean()
    seen["final"]["u-0-1"] = ("0:9", 100)
    assert "phantom" in verdicts(hist, seen)[0]


def test_checker_reports_a_read_of_a_write_that_was_not_applied():
    hist, seen = clean()
    hist.append(put(0, "r-0", "3", 0.8, 0.9, outcome="fail"))
    hist.append(get(0, "r-0", "3", 1.0, 1.1, 900))
    assert verdicts(hist, seen)[0] == {"phantom"}


def test_checker_reports_diverged_replicas():
    hist, seen = clean()
    seen["diverged"] = ["u-0-1"]
    assert verdicts(hist, seen)[0] == {"diverged"}
    # where rows: [id, status, addr, has, ..., version]
    one = [b"a", 0, b"x", True, 0, 5]
    assert not rows_diverge([one, one, one], 3)
    assert rows_diverge([one, one, one[:5] + [4]], 3)  # two versions
    assert rows_diverge([one, one], 3)  # a replica missing
    assert rows_diverge([one, one, [b"c", 1, b"z", False, 0, 0]], 3)


def test_checker_reports_an_unexpected_exit():
    hist, seen = clean()
    seen["exits"] = {3: [-11]}
    assert verdicts(hist, seen)[0] == {"unexpected_exits"}


def test_checker_reports_protocol_errors_and_sanitizers_in_logs():
    for text in ("... malformed replica message from ...",
                 "==1==ERROR: AddressSanitizer: heap-use-after-free",
                 "x.c:1:2: runtime error: signed integer overflow",
                 "ERROR: LeakSanitizer: detected memory leaks"):
        hist, seen = clean()
        seen["logs"][1] = text
        assert verdicts(hist, seen)[0] == {"protocol_errors"}, text


def test_checker_reports_corruption_that_authentication_did_not_refuse():
    hist, seen = clean()
    seen["counters"] = {"corrupted": 40, "duplicated": 3}
    assert verdicts(hist, seen)[0] == {"auth"}
    seen["counters"] = {"corrupted": 40, "gossip_bad_auth": 38,
                        "gossip_undecodable": 2}
    assert verdicts(hist, seen)[0] == {"auth"}
    seen["counters"] = {"corrupted": 40, "gossip_bad_auth": 40}
    assert verdicts(hist, seen)[0] == set()


def test_checker_reports_no_convergence():
    hist, seen = clean()
    assert verdicts(hist, seen, converged_s=None)[0] == {"no_convergence"}


def test_checker_reports_a_fault_window_without_effect():
    hist, seen = clean()
    w = [dict(kind="partition", t1=0.0, t2=1.0,
              evidence={"blocked_count": 0}, took_effect=False)]
    bad, r = verdicts(hist, seen, windows=w)
    assert bad == {"ineffective_faults"}
    assert r["ineffective_faults"][0]["kind"] == "partition"


def test_checker_reports_too_little_acknowledged():
    hist, seen = clean()
    assert verdicts(hist, seen, min_acked=5)[0] == {"too_few_acked"}
    assert verdicts(hist, seen, clients=3)[0] == {"too_few_acked"}
    # A window in which nothing was acknowledged.
    w = [dict(kind="kill", t1=5.0, t2=6.0, evidence={}, took_effect=True)]
    assert verdicts(hist, seen, windows=w)[0] == {"too_few_acked"}


def test_unknown_outcomes_are_the_transport_s_not_the_runner_s():
    # A bug in the runner (say a KeyError) must not pass as "unknown".
    assert not issubclass(KeyError, fault_run.UNKNOWN_ERRORS)
    assert issubclass(ConnectionResetError, fault_run.UNKNOWN_ERRORS)
    assert issubclass(fault_run.Closed, fault_run.UNKNOWN_ERRORS)


def test_every_kind_of_fault_can_be_made_ineffective():
    args = fault_run.parse_args(["--ineffective", "loss", "--kinds",
                                 "loss,kill", "--seed", "1"])
    assert args.kinds == ["loss", "kill"] and args.ineffective == "loss"
    assert set(fault_run.KINDS) == {"kill", "pause", "partition", "bridge",
                                    "loss", "corrupt", "clock", "fast-clock",
                                    "full", "membership"}
