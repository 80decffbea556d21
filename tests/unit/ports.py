"""Every port of the core beside what stands for it: the core's own implementations, and the
fakes the tests drive the core with. Never imported: mypy checks it (tests/unit/test_types.py),
so a fake or an implementation that drifts from its port fails `make test` instead of a test
passing against an interface the real peer no longer has. The Tango side (devices/) is not
type-checked; its peers of these ports are exercised by the integration tests."""

from photonflow.acquisition.acquirer import Sender
from photonflow.control.continuous_scan import MotorPort, ScanDetectors, TriggerGeneratorPort
from photonflow.control.controller import AcquirerPort, RecorderPort, _SeriesDetectors
from photonflow.control.lima_face import PipelinePort
from photonflow.control.recorder_group import RecorderGroup
from photonflow.datamanager.catalogue import Catalogue
from photonflow.datamanager.manager import VariablesLauncher
from photonflow.datamanager.runner import ResultSink
from photonflow.datamanager.variables_launcher import VariablesInProcess
from photonflow.events.bus import EventBus
from photonflow.recording.intake import Receiver
from photonflow.standardizing.capture import AttributeReader
from photonflow.standardizing.standardizer import EventPublisher
from photonflow.stream.transport import StreamDistributor, StreamReceiver, StreamSender
from tests.helpers.controller import FakeAcquirer, FakeRecorder
from tests.helpers.fakes import RecordingSender
from tests.helpers.lima import FakePipeline
from tests.helpers.scan import JournalingRecorder, PortDetectors, PortGenerator, PortMotor, TriggeredAcquirer
from tests.helpers.standardizing import BeamlineReader


def controller_peers(fake_acquirer: FakeAcquirer, fake_recorder: FakeRecorder) -> None:
    acquirer: AcquirerPort = fake_acquirer
    recorder: RecorderPort = fake_recorder
    del acquirer, recorder


def lima_face_peers(fake_pipeline: FakePipeline) -> None:
    pipeline: PipelinePort = fake_pipeline
    del pipeline


def scan_peers(port_motor: PortMotor, port_generator: PortGenerator, port_detectors: PortDetectors,
               series_detectors: _SeriesDetectors, triggered_acquirer: TriggeredAcquirer,
               journaling_recorder: JournalingRecorder) -> None:
    motor: MotorPort = port_motor
    generator: TriggerGeneratorPort = port_generator
    detectors: ScanDetectors = port_detectors
    detectors = series_detectors
    acquirer: AcquirerPort = triggered_acquirer
    recorder: RecorderPort = journaling_recorder
    del motor, generator, detectors, acquirer, recorder


def acquisition_senders(stream_sender: StreamSender, recording_sender: RecordingSender,
                        distributor: StreamDistributor) -> None:
    sender: Sender = stream_sender
    sender = recording_sender
    sender = distributor
    del sender


def recorder_group(group: RecorderGroup) -> None:
    recorder: RecorderPort = group
    del recorder


def recorder_receivers(stream_receiver: StreamReceiver) -> None:
    receiver: Receiver = stream_receiver
    del receiver


def standardizer_peers(event_bus: EventBus, beamline_reader: BeamlineReader) -> None:
    publisher: EventPublisher = event_bus
    reader: AttributeReader = beamline_reader
    del publisher, reader


def datamanager_peers(variables_in_process: VariablesInProcess, catalogue: Catalogue) -> None:
    variables: VariablesLauncher = variables_in_process
    results: ResultSink = catalogue
    del variables, results
