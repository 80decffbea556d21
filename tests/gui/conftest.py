"""Fixtures of the panel tests."""

import pytest


@pytest.fixture(scope="module")
def app():
    """One Qt application for the module; Taurus widgets need a TaurusApplication.

    TaurusApplication.exec_() tells Taurus the application started, which starts its client
    polling (SeriesId has no change events). The tests drive the loop themselves, so they
    say so here instead.
    """
    from taurus.external.qt import QtWidgets
    from taurus.qt.qtgui.application import TaurusApplication
    from taurus.taurusstatecontroller import application

    qt_app = QtWidgets.QApplication.instance() or TaurusApplication([], cmd_line_parser=None)
    application.application_started()
    return qt_app
