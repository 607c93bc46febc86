"""NRI external-plugin protocol for the agent: the only place that knows NRI's wire format.

Example::

    from agent.nri import Container, Plugin, Pod, Stub

    class Printer(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            print(pod.name, container.name, container.pid)

    Stub(Printer(), "/var/run/nri/nri.sock", name="printer", idx="50").run()
"""

from agent.nri.model import Container, ContainerState, Event, Mount, Pod
from agent.nri.stub import Launch, Plugin, RegistrationError, Stub, after_answer, launched_by_runtime

__all__ = ["Container", "ContainerState", "Event", "Launch", "Mount", "Plugin", "Pod", "RegistrationError", "Stub",
           "after_answer", "launched_by_runtime"]
