"""A context's code runs only in supervised child processes: a context that does not load, a
variable calling sys.exit(), one holding the interpreter past the run's deadline, and os._exit at
load or at run time each end up in the run's cells (value or reason) and in the DataManager's
state and status, never in the DataManager's own process; the next run goes on, closing leaves no
runner behind, and reprocessing recomputes runs with the context as it is now (removed variables
leave the run table)."""

from __future__ import annotations

import os
import sqlite3
import textwrap
from pathlib import Path

import pytest

from photonflow import states
from photonflow.datamanager.catalogue import PROCESSING_ORIGIN, Catalogue, RunRecord
from photonflow.datamanager.manager import DataManager
from photonflow.datamanager.variables_launcher import VariablesInProcess
from photonflow.errors import ConfigurationError
from tests.helpers.cli import run_photonflow, summary_of
from tests.helpers.fakes import EventLog
from tests.helpers.waiting import wait_until

PROPOSAL = "sv0001"
HEADER = "from photonflow.datamanager.context import Variable\n"
GOOD = HEADER + '''
@Variable(title="Twice the run")
def twice(run, number: "meta#run_number"):
    return 2 * number

@Variable(title="Label")
def label(run, sample: "meta#sample"):
    return f"{sample} ok"
'''


def record(run: int) -> RunRecord:
    return RunRecord(run=run, proposal=PROPOSAL, session="s1", sample="ceo2", beamline="test",
                     start="2026-12-05T10:00:00Z", end="2026-12-05T10:01:00Z", node="", role="data",
                     raw_file="", nexus_file="", frames_requested=4, frames_written=4, missing_frames=0,
                     end_reason="completed")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Setup:
    """A DataManager whose variables are computed by the real launcher (child processes), over a
    real catalogue holding runs 1..3, with the context file the test writes."""

    def __init__(self, tmp_path: Path, **launcher):
        self.tmp_path = tmp_path
        self.context = tmp_path / "context.py"
        self.context.write_text(GOOD)
        self.events = EventLog()
        self.variables = VariablesInProcess(self.context, tmp_path / "catalogue", **launcher)
        self.manager = DataManager(tmp_path / "data", "test", tmp_path / "catalogue", listener=self.events,
                                   variables=self.variables)
        self.manager.set_experiment(PROPOSAL, "s1", "ceo2")
        for run in (1, 2, 3):
            self.manager.catalogue.record_run(record(run))

    def write(self, code: str) -> None:
        self.context.write_text(HEADER + textwrap.dedent(code))

    def line_of(self, text: str) -> int:
        return next(number for number, line in enumerate(self.context.read_text().splitlines(), 1) if text in line)

    def compute(self, *runs: int, timeout: float = 120) -> dict[int, tuple[str, str]]:
        """Reprocesses ``runs``; once every one is done, each run's (state, status) when it was."""
        told = len(self.events.states)
        assert self.manager.reprocess(list(runs)) == len(runs)

        def done():
            outcomes = {}
            for state, status in self.events.states[told:]:
                for run in runs:
                    if status.startswith(f"Run {run}: variables"):
                        outcomes[run] = (state, status)
            return outcomes if len(outcomes) == len(runs) else None

        return wait_until(done, timeout, what=lambda: f"variables of runs {runs} ({self.events.states[-3:]})")

    def cells(self, run: int) -> dict[str, dict]:
        return self.manager.catalogue.variable_records(run)


@pytest.fixture
def setup(tmp_path):
    made: list[Setup] = []

    def make(**launcher) -> Setup:
        made.append(Setup(tmp_path, **launcher))
        return made[-1]

    yield make
    for each in made:
        each.manager.close()


def test_a_context_with_a_syntax_error_is_an_alarm_naming_its_line_and_the_runs_cells_say_why(setup):
    s = setup()
    assert s.compute(1)[1] == (states.ON, "Run 1: variables computed")
    s.write("""
        @Variable(title="Twice the run")
        def twice(run, number: "meta#run_number"):
            return 2 * number +
        """)
    state, status = s.compute(1)[1]
    reason = f"{s.context}:{s.line_of('return 2 * number +')}: syntax error"
    assert state == states.ALARM and status.startswith(f"Run 1: variables not computed: {reason}")
    assert {name: (cell["value"], cell["error"].startswith(reason)) for name, cell in s.cells(1).items()} == {
        "twice": (None, True), "label": (None, True)}  # the run table's cells of that run carry the reason
    s.context.write_text(GOOD)
    assert s.compute(1)[1] == (states.ON, "Run 1: variables computed")  # fixed: the ALARM ends
    assert s.manager.catalogue.variables(1) == {"twice": 2, "label": "ceo2 ok"}


def test_sys_exit_in_one_variable_fails_only_that_variable(setup):
    s = setup()
    s.write("""
        import sys

        @Variable(title="Quits")
        def quits(run):
            print('{"failed": "a print is no summary"}')  # goes to the runner's log, never taken for its answer
            sys.exit(3)

        @Variable(title="Twice the run")
        def twice(run, number: "meta#run_number"):
            return 2 * number
        """)
    assert s.compute(2)[2] == (states.ON, "Run 2: variables computed; failed: quits")
    cells = s.cells(2)
    assert cells["quits"]["value"] is None and cells["quits"]["error"] == "SystemExit: 3"
    assert cells["twice"]["value"] == 4 and cells["twice"]["error"] is None


def test_a_variable_holding_the_interpreter_past_the_runs_deadline_is_killed_and_the_next_run_goes_on(setup):
    s = setup(run_timeout_s=3.0)
    pid_file = s.tmp_path / "runner.pid"
    s.write(f"""
        import os
        import subprocess

        @Variable(title="Quick")
        def quick(run, number: "meta#run_number"):
            return 10 * number

        @Variable(title="Spins")
        def spins(run, value: "var#quick", number: "meta#run_number"):
            if number == 1:  # a C loop: the interpreter is never let go, the variable's own timeout cannot act
                child = subprocess.Popen(["sleep", "600"])
                open({str(pid_file)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
                sum(range(10 ** 12))
            return value + 1

        @Variable(title="After")
        def after(run, value: "var#spins"):
            return value + 1
        """)
    outcomes = s.compute(1, 2)
    state, status = outcomes[1]
    line = s.line_of('title="Spins"')  # a variable's line is its decorator's
    reason = f"timed out after 3 s while computing spins ({s.context}:{line})"
    assert state == states.ALARM and status == f"Run 1: variables not computed: {reason}"
    assert {name: (cell["value"], cell["error"]) for name, cell in s.cells(1).items()} == {
        "quick": (10, None), "spins": (None, reason), "after": (None, reason)}  # what was stored before stays
    assert s.cells(1)["spins"]["attributes"]["state"] == "timeout"
    assert outcomes[2] == (states.ON, "Run 2: variables computed")  # the next run went on, and ended the ALARM
    assert s.manager.catalogue.variables(2) == {"quick": 20, "spins": 21, "after": 22}
    runner, child = map(int, pid_file.read_text().split())
    wait_until(lambda: not alive(runner) and not alive(child), 30, what="the runner and its child gone")


def test_a_context_calling_os_exit_at_run_time_is_reported_for_that_run_only(setup):
    s = setup()
    s.write("""
        import os

        @Variable(title="Twice the run")
        def twice(run, number: "meta#run_number"):
            return 2 * number

        @Variable(title="Exits")
        def exits(run, value: "var#twice", number: "meta#run_number"):
            if number == 3:
                os._exit(7)
            return value
        """)
    outcomes = s.compute(3, 2)
    line = s.line_of('title="Exits"')
    reason = f"runner exited with code 7 while computing exits ({s.context}:{line})"
    assert outcomes[3] == (states.ALARM, f"Run 3: variables not computed: {reason}")
    assert {name: (cell["value"], cell["error"]) for name, cell in s.cells(3).items()} == {
        "twice": (6, None), "exits": (None, reason)}
    assert outcomes[2] == (states.ON, "Run 2: variables computed")
    assert s.manager.catalogue.variables(2) == {"twice": 4, "exits": 4}


def test_reload_context_loads_in_a_child_process_crashing_or_hanging_there_only(setup):
    s = setup(run_timeout_s=3.0)
    assert s.manager.reload_context() == ["label", "twice"]
    s.write("""
        import os
        os._exit(7)
        """)
    with pytest.raises(ConfigurationError) as crashed:
        s.manager.reload_context()
    assert str(crashed.value) == f"runner exited with code 7 while loading {s.context}"
    s.write("""
        import time
        time.sleep(600)
        """)
    with pytest.raises(ConfigurationError) as hung:
        s.manager.reload_context()
    assert str(hung.value) == f"timed out after 3 s while loading {s.context}"
    s.write("""
        import sys
        sys.exit(3)
        """)
    with pytest.raises(ConfigurationError) as exited:
        s.manager.reload_context()
    assert str(exited.value) == f"{s.context}:{s.line_of('sys.exit(3)')}: the context raised SystemExit: 3"
    assert s.manager.state == states.ON  # this process ran none of it


def test_closing_stops_the_runner_under_way_and_what_it_started(setup):
    s = setup()
    pid_file = s.tmp_path / "runner.pid"
    s.write(f"""
        import os
        import subprocess
        import time

        @Variable(title="Slow")
        def slow(run):
            child = subprocess.Popen(["sleep", "600"])
            open({str(pid_file)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(600)
        """)
    s.manager.reprocess([1, 2])
    wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, 60, what="the runner started")
    runner, child = map(int, pid_file.read_text().split())
    s.manager.close()
    assert not s.variables._thread.is_alive()
    wait_until(lambda: not alive(runner) and not alive(child), 30, what="the runner and its child gone")
    assert s.cells(1)["slow"]["error"] == ("stopped before it finished (the DataManager was closed or initialised "
                                           f"again) while computing slow ({s.context}:{s.line_of('title=')})")
    assert s.cells(2) == {}  # the run still waiting was dropped, not computed after the close


def runs_table_columns(catalogue: Catalogue) -> list[str]:
    with sqlite3.connect(catalogue.path) as db:
        return [column[0] for column in db.execute("SELECT * FROM runs_table").description]


def test_reprocessing_uses_the_context_as_it_is_now_and_removed_variables_leave_the_table(setup):
    s = setup()
    s.compute(1, 2)
    assert "label" in runs_table_columns(s.manager.catalogue)
    # what a processing job made of run 1 is not a variable of the context: it stays
    s.manager.catalogue.set_variable(1, "integration_file", "/data/r1_integrated.h5", attributes=PROCESSING_ORIGIN)
    s.write("""
        @Variable(title="Twice the run")
        def twice(run, number: "meta#run_number"):
            return 3 * number  # changed

        @Variable(title="Square")
        def square(run, number: "meta#run_number"):
            return number ** 2
        """)
    s.compute(1)
    assert s.manager.catalogue.variables(1) == {"twice": 3, "square": 1,  # label gone from run 1
                                                "integration_file": "/data/r1_integrated.h5"}
    assert s.manager.catalogue.variables(2) == {"twice": 4, "label": "ceo2 ok"}  # run 2 not recomputed yet
    assert "label" in runs_table_columns(s.manager.catalogue)
    s.compute(2)
    assert s.manager.catalogue.variables(2) == {"twice": 6, "square": 4}
    assert "label" not in runs_table_columns(s.manager.catalogue)  # no run has it any more
    assert {"twice", "square"} <= set(runs_table_columns(s.manager.catalogue))


def test_reprocess_refuses_bad_run_numbers_before_queuing_any(setup):
    s = setup()
    for runs, message in (([0], "run numbers start at 1"), ([2, -1], "run numbers start at 1"),
                          ([2, 9], "run(s) 9 not in the catalogue of sv0001")):
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            s.manager.reprocess(runs)
    assert s.variables.queued == 0 and s.cells(2) == {}


def test_photonflow_reprocess_recomputes_chosen_runs_without_the_suite(setup):
    s = setup()
    s.compute(1, 2)
    s.manager.close()
    s.write("""
        @Variable(title="Twice the run")
        def twice(run, number: "meta#run_number"):
            return 5 * number
        """)
    arguments = ["reprocess", "--proposal", PROPOSAL, "--catalogue", str(s.tmp_path / "catalogue"),
                 "--context", str(s.context)]
    var_dir = s.tmp_path / "var"
    done = run_photonflow(var_dir, *arguments, "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run 2: computed twice; removed label" in done.stdout
    assert summary_of(done)["runs"] == {"2": {"computed": ["twice"], "errors": {}, "skipped": {},
                                              "removed": ["label"]}}
    with Catalogue(s.tmp_path / "catalogue", PROPOSAL) as catalogue:
        assert catalogue.variables(2) == {"twice": 10}
        assert catalogue.variables(1) == {"twice": 2, "label": "ceo2 ok"}  # not chosen: as it was
    unknown = run_photonflow(var_dir, *arguments, "7")
    assert unknown.returncode == 2 and "run(s) 7 not in the catalogue of sv0001" in unknown.stderr
    typo = run_photonflow(var_dir, *arguments[:2], "nope0001", *arguments[3:], "1")
    assert typo.returncode == 2 and "proposal nope0001 has no catalogue" in typo.stderr
    assert not (s.tmp_path / "catalogue" / "nope0001.sqlite").exists()
