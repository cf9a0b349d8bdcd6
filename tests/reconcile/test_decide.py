"""decide(desired, live, history) as a table over DESIGN §5, plus totality properties."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcilers.decide import FIRST_TRIGGER, Action, Plan, decide
from reconcilers.driver import ChangeKind, Live, SavedImage
from reconcilers.history import (
    ApiAction,
    ApiRequest,
    History,
    HostShutdown,
    LastStop,
    Stalled,
)
from reconcilers.model import (
    Cause,
    DesiredState,
    Domain,
    DomainSpec,
    DriverName,
    Lifecycle,
    LifecycleAction,
    Management,
    Metadata,
    QemuSpec,
    Reason,
    RestartPolicy,
    SourceRef,
    State,
    StopMode,
    UpdatePolicy,
)
from reconcilers.statemachine import allowed

A, C, R, S = Action, Cause, Reason, State
P = RestartPolicy
LA = LifecycleAction
MiB = 1024 * 1024
NOW = 1000.0
BASE = DomainSpec(driver=DriverName.QEMU, qemu=QemuSpec())


def domain(state: DesiredState = DesiredState.RUNNING, **changes: Any) -> Domain:
    spec = dataclasses.replace(BASE, state=state, **changes)
    return Domain(Metadata("web-1", uuid="u"), spec, SourceRef("web-1.yaml", 1))


RUN, PAUSE, OFF = DesiredState.RUNNING, DesiredState.PAUSED, DesiredState.SHUTOFF


def stop(reason: Reason, cause: Cause, epoch: int = 1, at: float = 500.0,
         host: bool = False) -> LastStop:
    return LastStop(reason, cause, epoch, at, host)


def api(action: ApiAction, epoch: int = 1, at: float = 600.0,
        force_boot: bool = False) -> ApiRequest:
    return ApiRequest(action, 1000, epoch, at, force_boot)


def image(spec: DomainSpec = BASE, paused: bool = False, at: float = 700.0) -> SavedImage:
    return SavedImage("/state/save/web-1.img", spec, paused, 300 * 1024 * 1024, at)


def hold(mode: StopMode = StopMode.SAVE) -> HostShutdown:
    return HostShutdown(mode, 0, 650.0)


SAVE_MODE = StopMode.SAVE
OBSERVE = Management.OBSERVE
OBSERVED = dataclasses.replace(BASE, management=OBSERVE)


def history(**fields: Any) -> History:
    return History(now=NOW, **{"epoch": 1, **fields})


BIG = dataclasses.replace(BASE, memory=1024 * MiB)
LIVE_MEMORY = {"memory": ChangeKind.LIVE}
RESTART_MEMORY = {"memory": ChangeKind.RESTART}

# id: (desired or None, (state, reason), history, (action, cause, words in the reason, requeue))
ROWS: dict[str, tuple[Domain | None, tuple[State, Reason], History,
                      tuple[Action, Cause, str, float | None]]] = {
    # nostate: never touched, whatever is desired
    "nostate-running": (domain(), (S.NOSTATE, R.UNKNOWN), history(),
                        (A.REPORT, C.CONTROLLER, "never touched", None)),
    "nostate-removed": (None, (S.NOSTATE, R.UNKNOWN), history(),
                        (A.REPORT, C.CONTROLLER, "unknown process", None)),
    "nostate-shutoff": (domain(OFF), (S.NOSTATE, R.UNKNOWN), history(),
                        (A.REPORT, C.CONTROLLER, "never touched", None)),
    # desired running
    "running-converged": (domain(), (S.RUNNING, R.BOOTED), history(live_spec=BASE),
                          (A.NOTHING, C.CONTROLLER, "running as desired", None)),
    "running-blocked-converged": (domain(), (S.BLOCKED, R.UNKNOWN), history(live_spec=BASE),
                                  (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "running-live-spec-unknown": (domain(), (S.RUNNING, R.BOOTED), history(),
                                  (A.NOTHING, C.CONTROLLER, "live spec unknown", None)),
    "running-first-start": (domain(), (S.SHUTOFF, R.UNKNOWN), history(),
                            (A.START, C.MANIFEST, "desired running: shutoff (unknown); starting",
                             None)),
    "running-start-after-manifest-change": (
        domain(restart_policy=P.NEVER), (S.SHUTOFF, R.CRASHED),
        history(last_stop=stop(R.CRASHED, C.GUEST, epoch=0)),
        (A.START, C.MANIFEST, "starting", None)),
    "running-fresh-start-ignores-backoff": (
        domain(), (S.SHUTOFF, R.FAILED),
        history(last_stop=stop(R.FAILED, C.CONTROLLER, epoch=0), backoff_until=NOW + 60),
        (A.START, C.MANIFEST, "starting", None)),
    "running-paused-user-resume": (domain(), (S.PAUSED, R.USER), history(),
                                   (A.RESUME, C.MANIFEST, "desired running: paused (user)",
                                    None)),
    "running-paused-unknown-resume": (domain(), (S.PAUSED, R.UNKNOWN), history(),
                                      (A.RESUME, C.CONTROLLER, "resuming", None)),
    "running-paused-starting-up-resume": (domain(), (S.PAUSED, R.STARTING_UP), history(),
                                          (A.RESUME, C.CONTROLLER, "resuming", None)),
    "running-paused-ioerror-report": (domain(), (S.PAUSED, R.IOERROR), history(),
                                      (A.REPORT, C.CONTROLLER, "I/O error", None)),
    "running-paused-watchdog-report": (domain(), (S.PAUSED, R.WATCHDOG), history(),
                                       (A.REPORT, C.CONTROLLER, "watchdog", None)),
    "running-paused-panicked-report": (domain(), (S.PAUSED, R.PANICKED), history(),
                                       (A.REPORT, C.CONTROLLER, "panicked", None)),
    "running-paused-migration-report": (domain(), (S.PAUSED, R.MIGRATION), history(),
                                        (A.REPORT, C.CONTROLLER, "migration", None)),
    "running-paused-shutting-down-report": (domain(), (S.PAUSED, R.SHUTTING_DOWN), history(),
                                            (A.REPORT, C.CONTROLLER, "shut down", None)),
    "running-being-shut-down-waits": (domain(), (S.SHUTDOWN, R.USER), history(),
                                      (A.NOTHING, C.CONTROLLER, "waiting", None)),
    "running-pmsuspended-report": (domain(), (S.PMSUSPENDED, R.UNKNOWN), history(),
                                   (A.REPORT, C.CONTROLLER, "suspended by the guest", None)),
    # restart policies after a stop under the current manifest
    "always-crashed": (domain(), (S.SHUTOFF, R.CRASHED),
                       history(last_stop=stop(R.CRASHED, C.EXTERNAL)),
                       (A.START, C.CONTROLLER,
                        "restartPolicy Always: domain stopped (crashed); starting again", None)),
    "always-guest-poweroff": (domain(), (S.SHUTOFF, R.SHUTDOWN),
                              history(last_stop=stop(R.SHUTDOWN, C.GUEST)),
                              (A.START, C.CONTROLLER,
                               "restartPolicy Always: the guest powered off", None)),
    "always-host-signal": (domain(), (S.SHUTOFF, R.SHUTDOWN),
                           history(last_stop=stop(R.SHUTDOWN, C.EXTERNAL)),
                           (A.START, C.CONTROLLER, "restartPolicy Always", None)),
    "always-api-stop-respected": (domain(), (S.SHUTOFF, R.DESTROYED),
                                  history(last_stop=stop(R.DESTROYED, C.API)),
                                  (A.REPORT, C.CONTROLLER,
                                   "through the API; left off until the manifest changes", None)),
    "onfailure-crashed": (domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.CRASHED),
                          history(last_stop=stop(R.CRASHED, C.GUEST)),
                          (A.START, C.CONTROLLER, "restartPolicy OnFailure", None)),
    "onfailure-failed": (domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.FAILED),
                         history(last_stop=stop(R.FAILED, C.CONTROLLER)),
                         (A.START, C.CONTROLLER, "stopped (failed)", None)),
    "onfailure-daemon": (domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.DAEMON),
                         history(last_stop=stop(R.DAEMON, C.EXTERNAL)),
                         (A.START, C.CONTROLLER, "stopped (daemon)", None)),
    "onfailure-unknown": (domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.UNKNOWN),
                          history(last_stop=stop(R.UNKNOWN, C.EXTERNAL)),
                          (A.START, C.CONTROLLER, "stopped (unknown)", None)),
    "onfailure-guest-poweroff-respected": (
        domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.SHUTDOWN),
        history(last_stop=stop(R.SHUTDOWN, C.GUEST)),
        (A.REPORT, C.CONTROLLER, "OnFailure: the guest powered off; left off until the manifest",
         None)),
    "onfailure-guest-poweroff-then-manifest-change": (
        domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.SHUTDOWN),
        history(epoch=2, last_stop=stop(R.SHUTDOWN, C.GUEST, epoch=1)),
        (A.START, C.MANIFEST, "starting", None)),
    "onfailure-external-destroy-respected": (
        domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.DESTROYED),
        history(last_stop=stop(R.DESTROYED, C.EXTERNAL)),
        (A.REPORT, C.CONTROLLER, "left off", None)),
    "never-crashed-stays-off": (domain(restart_policy=P.NEVER), (S.SHUTOFF, R.CRASHED),
                                history(last_stop=stop(R.CRASHED, C.GUEST)),
                                (A.REPORT, C.CONTROLLER, "restartPolicy Never", None)),
    "never-failed-start-stays-off": (domain(restart_policy=P.NEVER), (S.SHUTOFF, R.FAILED),
                                     history(last_stop=stop(R.FAILED, C.CONTROLLER)),
                                     (A.REPORT, C.CONTROLLER, "left off", None)),
    "never-first-start": (domain(restart_policy=P.NEVER), (S.SHUTOFF, R.UNKNOWN), history(),
                          (A.START, C.MANIFEST, "starting", None)),
    "never-update-restart-continues": (domain(restart_policy=P.NEVER), (S.SHUTOFF, R.SHUTDOWN),
                                       history(last_stop=stop(R.SHUTDOWN, C.MANIFEST)),
                                       (A.START, C.CONTROLLER, "by the manifest to restart it",
                                        None)),
    "controller-destroy-continues": (domain(restart_policy=P.ON_FAILURE), (S.SHUTOFF, R.DESTROYED),
                                     history(last_stop=stop(R.DESTROYED, C.CONTROLLER)),
                                     (A.START, C.CONTROLLER, "by the controller", None)),
    # lifecycle actions
    "onpoweroff-restart": (domain(restart_policy=P.NEVER, lifecycle=Lifecycle(
        on_poweroff=LA.RESTART)), (S.SHUTOFF, R.SHUTDOWN),
        history(last_stop=stop(R.SHUTDOWN, C.GUEST)),
        (A.START, C.CONTROLLER, "onPoweroff restart: the guest powered off", None)),
    "onpoweroff-preserve": (domain(lifecycle=Lifecycle(on_poweroff=LA.PRESERVE)),
                            (S.SHUTOFF, R.SHUTDOWN), history(last_stop=stop(R.SHUTDOWN, C.GUEST)),
                            (A.REPORT, C.CONTROLLER, "onPoweroff preserve", None)),
    "oncrash-restart-beats-never": (domain(restart_policy=P.NEVER, lifecycle=Lifecycle(
        on_crash=LA.RESTART)), (S.SHUTOFF, R.CRASHED),
        history(last_stop=stop(R.CRASHED, C.GUEST)),
        (A.START, C.CONTROLLER, "onCrash restart: domain stopped (crashed): the guest "
                                "panicked", None)),
    "crashed-oncrash-destroy": (domain(), (S.CRASHED, R.PANICKED), history(),
                                (A.DESTROY, C.GUEST, "onCrash destroy", 0.0)),
    "crashed-oncrash-restart": (domain(lifecycle=Lifecycle(on_crash=LA.RESTART)),
                                (S.CRASHED, R.PANICKED), history(),
                                (A.DESTROY, C.GUEST, "onCrash restart", 0.0)),
    "crashed-oncrash-coredump-restart": (
        domain(lifecycle=Lifecycle(on_crash=LA.COREDUMP_RESTART)), (S.CRASHED, R.PANICKED),
        history(), (A.DESTROY, C.GUEST, "onCrash coredump-restart", 0.0)),
    "crashed-oncrash-preserve": (domain(lifecycle=Lifecycle(on_crash=LA.PRESERVE)),
                                 (S.CRASHED, R.PANICKED), history(),
                                 (A.REPORT, C.CONTROLLER, "kept for inspection", None)),
    # crash-loop backoff
    "backoff-waits": (domain(), (S.SHUTOFF, R.CRASHED),
                      history(last_stop=stop(R.CRASHED, C.GUEST), failures=3,
                              backoff_until=NOW + 40),
                      (A.NOTHING, C.CONTROLLER, "backoff after 3 failures, next try in 40 s",
                       40.0)),
    "backoff-over": (domain(), (S.SHUTOFF, R.CRASHED),
                     history(last_stop=stop(R.CRASHED, C.GUEST), failures=3, backoff_until=NOW),
                     (A.START, C.CONTROLLER, "starting again", None)),
    # desired paused
    "paused-suspend": (domain(PAUSE), (S.RUNNING, R.BOOTED), history(),
                       (A.SUSPEND, C.MANIFEST, "suspending", None)),
    "paused-start-paused": (domain(PAUSE), (S.SHUTOFF, R.UNKNOWN), history(),
                            (A.START_PAUSED, C.MANIFEST, "desired paused", None)),
    "paused-restart-paused": (domain(PAUSE), (S.SHUTOFF, R.CRASHED),
                              history(last_stop=stop(R.CRASHED, C.GUEST)),
                              (A.START_PAUSED, C.CONTROLLER, "restartPolicy Always", None)),
    "paused-converged": (domain(PAUSE), (S.PAUSED, R.USER), history(live_spec=BASE),
                         (A.NOTHING, C.CONTROLLER, "paused as desired", None)),
    "paused-ioerror-report": (domain(PAUSE), (S.PAUSED, R.IOERROR), history(),
                              (A.REPORT, C.CONTROLLER, "I/O error", None)),
    "paused-crashed": (domain(PAUSE), (S.CRASHED, R.PANICKED), history(),
                       (A.DESTROY, C.GUEST, "onCrash destroy", 0.0)),
    # spec changes
    "live-change-applied": (domain(memory=1024 * MiB), (S.RUNNING, R.BOOTED),
                            history(live_spec=BASE, classification=LIVE_MEMORY),
                            (A.APPLY_LIVE, C.MANIFEST, "applying live: memory", None)),
    "restart-change-live-policy-pending": (
        domain(memory=1024 * MiB), (S.RUNNING, R.BOOTED),
        history(live_spec=BASE, classification=RESTART_MEMORY),
        (A.NOTHING, C.CONTROLLER, "pending restart: memory", None)),
    "restart-change-restart-policy": (
        domain(memory=1024 * MiB, update_policy=UpdatePolicy.RESTART), (S.RUNNING, R.BOOTED),
        history(live_spec=BASE, classification=RESTART_MEMORY),
        (A.RESTART, C.MANIFEST, "restart-only changes (memory); restarting gracefully", None)),
    "restart-change-paused-destroys": (
        domain(PAUSE, memory=1024 * MiB, update_policy=UpdatePolicy.RESTART),
        (S.PAUSED, R.USER), history(live_spec=BASE, classification=RESTART_MEMORY),
        (A.DESTROY, C.MANIFEST, "cannot shut down", 0.0)),
    "reverted-change-is-converged": (domain(), (S.RUNNING, R.BOOTED),
                                     history(live_spec=BASE, classification=RESTART_MEMORY),
                                     (A.NOTHING, C.CONTROLLER, "running as desired", None)),
    "controller-field-change-needs-nothing": (
        domain(restart_policy=P.NEVER, shutdown_timeout=5.0), (S.RUNNING, R.BOOTED),
        history(live_spec=BASE), (A.NOTHING, C.CONTROLLER, "running as desired", None)),
    # desired shutoff
    "shutoff-converged": (domain(OFF), (S.SHUTOFF, R.SHUTDOWN), history(),
                          (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "shutoff-shutdown": (domain(OFF), (S.RUNNING, R.BOOTED), history(),
                         (A.SHUTDOWN, C.MANIFEST, "shutting down", None)),
    "shutoff-pmsuspended": (domain(OFF), (S.PMSUSPENDED, R.UNKNOWN), history(),
                            (A.SHUTDOWN, C.MANIFEST, "shutting down", None)),
    "shutoff-again-while-shutting-down": (domain(OFF), (S.SHUTDOWN, R.USER), history(),
                                          (A.SHUTDOWN, C.MANIFEST, "shutdownTimeout", None)),
    "shutoff-paused-user-resume-first": (domain(OFF), (S.PAUSED, R.USER), history(),
                                         (A.RESUME, C.MANIFEST, "shut down gracefully", 0.0)),
    "shutoff-paused-ioerror-destroy": (domain(OFF), (S.PAUSED, R.IOERROR), history(),
                                       (A.DESTROY, C.MANIFEST, "destroying", None)),
    "shutoff-crashed-destroy": (domain(OFF, lifecycle=Lifecycle(on_crash=LA.PRESERVE)),
                                (S.CRASHED, R.PANICKED), history(),
                                (A.DESTROY, C.MANIFEST, "destroying", None)),
    # manifest removed
    "removed-running": (None, (S.RUNNING, R.BOOTED), history(),
                        (A.SHUTDOWN, C.MANIFEST, "manifest removed: shutting down", 0.0)),
    "removed-paused": (None, (S.PAUSED, R.USER), history(),
                       (A.RESUME, C.MANIFEST, "manifest removed", 0.0)),
    "removed-crashed": (None, (S.CRASHED, R.PANICKED), history(),
                        (A.DESTROY, C.MANIFEST, "manifest removed", 0.0)),
    "removed-shutoff-undefine": (None, (S.SHUTOFF, R.SHUTDOWN), history(),
                                 (A.UNDEFINE, C.MANIFEST, "disk images are kept", None)),
    # removal grace period and the mass-prune guard
    "removal-grace-waits": (domain(), (S.RUNNING, R.BOOTED), history(removal_in=2.5),
                            (A.NOTHING, C.CONTROLLER, "undefined in 2.5 s", 2.5)),
    "removal-held-waits-for-confirm": (domain(), (S.RUNNING, R.BOOTED),
                                       history(removal_in=float("inf")),
                                       (A.NOTHING, C.CONTROLLER, "prune --confirm", None)),
    "removal-due-is-no-wait": (None, (S.RUNNING, R.BOOTED), history(removal_in=0.0),
                               (A.SHUTDOWN, C.MANIFEST, "manifest removed", 0.0)),
    # API requests in force (made under the current epoch)
    "api-stop": (domain(), (S.RUNNING, R.BOOTED), history(override=api(ApiAction.STOP)),
                 (A.SHUTDOWN, C.API, "stop through the API by uid 1000", None)),
    "api-stop-done": (domain(), (S.SHUTOFF, R.SHUTDOWN),
                      history(override=api(ApiAction.STOP),
                              last_stop=stop(R.SHUTDOWN, C.API, at=700.0)),
                      (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "api-destroy-holds-off": (domain(), (S.SHUTOFF, R.DESTROYED),
                              history(override=api(ApiAction.DESTROY),
                                      last_stop=stop(R.DESTROYED, C.API, at=700.0)),
                              (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "api-suspend": (domain(), (S.RUNNING, R.BOOTED), history(override=api(ApiAction.SUSPEND)),
                    (A.SUSPEND, C.API, "suspend through the API", None)),
    "api-resume-of-manifest-pause": (domain(PAUSE), (S.PAUSED, R.USER),
                                     history(override=api(ApiAction.RESUME)),
                                     (A.RESUME, C.API, "resume through the API", None)),
    "api-request-of-an-older-epoch-is-lifted": (
        domain(), (S.SHUTOFF, R.SHUTDOWN),
        history(epoch=2, override=api(ApiAction.STOP, epoch=1),
                last_stop=stop(R.SHUTDOWN, C.API, epoch=1)),
        (A.START, C.MANIFEST, "starting", None)),
    "api-start-after-api-stop": (domain(), (S.SHUTOFF, R.DESTROYED),
                                 history(override=api(ApiAction.START, at=800.0),
                                         last_stop=stop(R.DESTROYED, C.API, at=700.0)),
                                 (A.START, C.API, "start through the API", None)),
    "api-start-ignores-backoff-of-earlier-failures": (
        domain(), (S.SHUTOFF, R.CRASHED),
        history(override=api(ApiAction.START, at=800.0), failures=4, backoff_until=NOW + 100,
                last_stop=stop(R.CRASHED, C.GUEST, at=700.0)),
        (A.START, C.API, "starting", None)),
    "api-start-then-crash-follows-the-policy": (
        domain(), (S.SHUTOFF, R.CRASHED),
        history(override=api(ApiAction.START, at=600.0), failures=2, backoff_until=NOW + 20,
                last_stop=stop(R.CRASHED, C.GUEST, at=700.0)),
        (A.NOTHING, C.CONTROLLER, "crash-loop backoff after 2 failures", 20.0)),
    "api-start-overrules-an-earlier-stall": (
        domain(), (S.SHUTOFF, R.FAILED),
        history(override=api(ApiAction.START, at=800.0),
                stalled=Stalled("not supported", epoch=1, at=700.0)),
        (A.START, C.API, "starting", None)),
    "api-start-before-a-stall-does-not-overrule-it": (
        domain(), (S.SHUTOFF, R.FAILED),
        history(override=api(ApiAction.START, at=600.0),
                stalled=Stalled("not supported", epoch=1, at=700.0)),
        (A.REPORT, C.CONTROLLER, "stalled: not supported", None)),
    "api-resume-then-crash-restart-is-the-controllers": (
        domain(), (S.SHUTOFF, R.CRASHED),
        history(override=api(ApiAction.RESUME, at=600.0),
                last_stop=stop(R.CRASHED, C.GUEST, at=700.0)),
        (A.START, C.CONTROLLER, "restartPolicy Always: domain stopped (crashed)", None)),
    "api-suspend-keeps-a-pause-found-at-reattach": (
        domain(PAUSE), (S.PAUSED, R.UNKNOWN), history(override=api(ApiAction.SUSPEND)),
        (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "api-restart-brings-it-down": (domain(), (S.RUNNING, R.BOOTED),
                                   history(override=api(ApiAction.RESTART)),
                                   (A.SHUTDOWN, C.API, "restart through the API", None)),
    "api-restart-paused-resumes-first": (domain(), (S.PAUSED, R.USER),
                                         history(override=api(ApiAction.RESTART)),
                                         (A.RESUME, C.API, "shut down gracefully", 0.0)),
    "api-restart-down-starts-per-manifest": (
        domain(PAUSE), (S.SHUTOFF, R.SHUTDOWN),
        history(override=api(ApiAction.RESTART), last_stop=stop(R.SHUTDOWN, C.API, at=700.0)),
        (A.START_PAUSED, C.CONTROLLER, "completing a restart through the API", None)),
    "api-restart-with-manifest-shutoff-stays-off": (
        domain(OFF), (S.SHUTOFF, R.SHUTDOWN),
        history(override=api(ApiAction.RESTART), last_stop=stop(R.SHUTDOWN, C.API, at=700.0)),
        (A.NOTHING, C.CONTROLLER, "as desired", None)),
    # a host-validation stall lets the start through: it validates the host first
    "host-stall-rechecks-on-start": (domain(), (S.SHUTOFF, R.UNKNOWN),
                                     history(stalled=Stalled("spec.qemu.kernel: missing",
                                                             epoch=1, host=True)),
                                     (A.START, C.MANIFEST, "re-checking the host", None)),
    # a graceful shutdown waiting for its guest in the background
    "shutdown-under-way-is-not-asked-again": (
        domain(OFF), (S.SHUTDOWN, R.USER), history(shutting_down=True),
        (A.NOTHING, C.CONTROLLER, "a graceful shutdown is under way", None)),
    "restart-under-way-is-not-asked-again": (
        domain(memory=1024 * MiB, update_policy=UpdatePolicy.RESTART), (S.RUNNING, R.BOOTED),
        history(live_spec=BASE, classification=RESTART_MEMORY, shutting_down=True),
        (A.NOTHING, C.CONTROLLER, "a graceful shutdown is under way", None)),
    # terminal errors
    "stalled-blocks-start": (domain(), (S.SHUTOFF, R.FAILED),
                             history(last_stop=stop(R.FAILED, C.CONTROLLER),
                                     stalled=Stalled("spec.vcpus: too many", epoch=1)),
                             (A.REPORT, C.CONTROLLER, "stalled: spec.vcpus: too many; no start",
                              None)),
    "stalled-from-older-manifest-ignored": (domain(), (S.SHUTOFF, R.FAILED),
                                            history(stalled=Stalled("old", epoch=0)),
                                            (A.START, C.MANIFEST, "starting", None)),
    # managed save: a desired shutoff with stopMode save
    "stopmode-save-running": (domain(OFF, stop_mode=SAVE_MODE), (S.RUNNING, R.BOOTED),
                              history(), (A.SAVE, C.MANIFEST, "(stopMode save): saving", None)),
    "stopmode-save-blocked": (domain(OFF, stop_mode=SAVE_MODE), (S.BLOCKED, R.UNKNOWN),
                              history(), (A.SAVE, C.MANIFEST, "saving", None)),
    "stopmode-save-paused-is-saved-paused": (domain(OFF, stop_mode=SAVE_MODE), (S.PAUSED, R.USER),
                                             history(), (A.SAVE, C.MANIFEST, "saving", None)),
    "stopmode-save-paused-ioerror-destroyed": (
        domain(OFF, stop_mode=SAVE_MODE), (S.PAUSED, R.IOERROR), history(),
        (A.DESTROY, C.MANIFEST, "destroying", None)),
    "stopmode-save-crashed-destroyed": (
        domain(OFF, stop_mode=SAVE_MODE, lifecycle=Lifecycle(on_crash=LA.PRESERVE)),
        (S.CRASHED, R.PANICKED), history(), (A.DESTROY, C.MANIFEST, "destroying", None)),
    "stopmode-save-shutdown-under-way-continues": (
        domain(OFF, stop_mode=SAVE_MODE), (S.SHUTDOWN, R.USER), history(),
        (A.SHUTDOWN, C.MANIFEST, "shutting down", None)),
    "stopmode-save-saved-converged": (domain(OFF, stop_mode=SAVE_MODE), (S.SHUTOFF, R.SAVED),
                                      history(saved=image()),
                                      (A.NOTHING, C.CONTROLLER, "shutoff (saved) as desired",
                                       None)),
    "stopmode-save-removed-shuts-down": (None, (S.RUNNING, R.BOOTED), history(),
                                         (A.SHUTDOWN, C.MANIFEST, "manifest removed", 0.0)),
    "removed-saved-undefine-discards-the-image": (
        None, (S.SHUTOFF, R.SAVED), history(saved=image()),
        (A.UNDEFINE, C.MANIFEST, "its saved image is discarded", None)),
    "saving-under-way-waits": (domain(OFF, stop_mode=SAVE_MODE), (S.PAUSED, R.SAVE),
                               history(saving=True),
                               (A.NOTHING, C.CONTROLLER, "a managed save is under way", None)),
    # managed save through the API; stop and restart shut down whatever stopMode says
    "api-save": (domain(), (S.RUNNING, R.BOOTED), history(override=api(ApiAction.SAVE)),
                 (A.SAVE, C.API, "restored at the next start (save through the API", None)),
    "api-save-of-a-paused-domain": (domain(PAUSE), (S.PAUSED, R.USER),
                                    history(override=api(ApiAction.SAVE)),
                                    (A.SAVE, C.API, "save through the API", None)),
    "api-save-done-holds-off": (domain(), (S.SHUTOFF, R.SAVED),
                                history(override=api(ApiAction.SAVE), saved=image(),
                                        last_stop=stop(R.SAVED, C.API, at=700.0)),
                                (A.NOTHING, C.CONTROLLER, "shutoff (saved) as desired", None)),
    "api-stop-shuts-down-under-stopmode-save": (
        domain(stop_mode=SAVE_MODE), (S.RUNNING, R.BOOTED), history(override=api(ApiAction.STOP)),
        (A.SHUTDOWN, C.API, "stop through the API", None)),
    "api-restart-shuts-down-under-stopmode-save": (
        domain(stop_mode=SAVE_MODE), (S.RUNNING, R.BOOTED),
        history(override=api(ApiAction.RESTART)),
        (A.SHUTDOWN, C.API, "restart through the API", None)),
    # a start restores the saved image
    "restore-at-start": (domain(), (S.SHUTOFF, R.SAVED),
                         history(epoch=2, saved=image(),
                                 last_stop=stop(R.SAVED, C.MANIFEST, epoch=1)),
                         (A.RESTORE, C.MANIFEST, "starting from its saved image (saved running)",
                          None)),
    "restore-paused-image-then-resume": (domain(), (S.SHUTOFF, R.SAVED),
                                         history(saved=image(paused=True)),
                                         (A.RESTORE, C.MANIFEST, "(saved paused)", 0.0)),
    "restore-paused-image-stays-paused": (domain(PAUSE), (S.SHUTOFF, R.SAVED),
                                          history(saved=image(paused=True)),
                                          (A.RESTORE, C.MANIFEST, "(saved paused)", None)),
    "restore-running-image-then-suspend": (domain(PAUSE), (S.SHUTOFF, R.SAVED),
                                           history(saved=image()),
                                           (A.RESTORE, C.MANIFEST, "(saved running)", 0.0)),
    "restore-by-api-start-after-api-save": (
        domain(), (S.SHUTOFF, R.SAVED),
        history(override=api(ApiAction.START, at=800.0), saved=image(),
                last_stop=stop(R.SAVED, C.API, at=700.0)),
        (A.RESTORE, C.API, "start through the API", None)),
    "restore-keeps-the-image-over-a-live-change": (
        domain(memory=1024 * MiB), (S.SHUTOFF, R.SAVED),
        history(saved=image(), saved_classification=LIVE_MEMORY),
        (A.RESTORE, C.MANIFEST, "from its saved image", None)),
    "restart-only-change-discards-the-image": (
        domain(memory=1024 * MiB), (S.SHUTOFF, R.SAVED),
        history(saved=image(), saved_classification=RESTART_MEMORY),
        (A.START, C.MANIFEST, "discarding its saved image: restart-only changes since the save "
                              "(memory)", None)),
    "force-boot-discards-the-image": (
        domain(), (S.SHUTOFF, R.SAVED),
        history(override=api(ApiAction.START, at=800.0, force_boot=True), saved=image(),
                last_stop=stop(R.SAVED, C.API, at=700.0)),
        (A.START, C.API, "forced boot (domctl start --force-boot by uid 1000)", None)),
    "force-boot-before-the-save-restores": (
        domain(), (S.SHUTOFF, R.SAVED),
        history(override=api(ApiAction.START, at=600.0, force_boot=True), saved=image()),
        (A.RESTORE, C.API, "from its saved image", None)),
    "stall-holds-a-restore-back": (domain(), (S.SHUTOFF, R.SAVED),
                                   history(saved=image(), stalled=Stalled("bad", epoch=1)),
                                   (A.REPORT, C.CONTROLLER, "stalled: bad; no restore", None)),
    # a host shutdown holds its domains down until the controller restarts
    "host-shutdown-saves": (domain(), (S.RUNNING, R.BOOTED), history(host_shutdown=hold()),
                            (A.SAVE, C.API, "host-shutdown --mode save by uid 0", None)),
    "host-shutdown-shuts-down": (domain(stop_mode=SAVE_MODE), (S.RUNNING, R.BOOTED),
                                 history(host_shutdown=hold(StopMode.SHUTDOWN)),
                                 (A.SHUTDOWN, C.API, "host-shutdown --mode shutdown", None)),
    "host-shutdown-holds-off": (domain(), (S.SHUTOFF, R.SAVED),
                                history(host_shutdown=hold(), saved=image(),
                                        last_stop=stop(R.SAVED, C.API, at=700.0, host=True)),
                                (A.NOTHING, C.CONTROLLER, "held down until the controller "
                                                          "restarts", None)),
    "host-shutdown-holds-over-a-manifest-change-and-a-start": (
        domain(), (S.SHUTOFF, R.SHUTDOWN),
        history(epoch=2, host_shutdown=hold(), override=api(ApiAction.START, epoch=2, at=800.0),
                last_stop=stop(R.SHUTDOWN, C.API, epoch=1, at=700.0, host=True)),
        (A.NOTHING, C.CONTROLLER, "held down", None)),
    "host-shutdown-over-restores": (
        domain(), (S.SHUTOFF, R.SAVED),
        history(saved=image(), last_stop=stop(R.SAVED, C.API, at=700.0, host=True)),
        (A.RESTORE, C.CONTROLLER, "by a host shutdown; back after the controller's restart; "
                                  "starting again from its saved image", None)),
    "host-shutdown-over-boots": (
        domain(restart_policy=P.NEVER), (S.SHUTOFF, R.SHUTDOWN),
        history(last_stop=stop(R.SHUTDOWN, C.API, at=700.0, host=True)),
        (A.START, C.CONTROLLER, "by a host shutdown", None)),
    "host-shutdown-over-then-api-stop-holds": (
        domain(), (S.SHUTOFF, R.SAVED),
        history(saved=image(), override=api(ApiAction.STOP, at=800.0),
                last_stop=stop(R.SAVED, C.API, at=700.0, host=True)),
        (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "observe-leaves-a-killed-domain-down": (
        domain(management=OBSERVE), (S.SHUTOFF, R.CRASHED),
        history(last_stop=stop(R.CRASHED, C.EXTERNAL)),
        (A.REPORT, C.CONTROLLER, "Drift: state running wanted, shutoff seen; management "
                                 "Observe: not acting (Enforce would start", None)),
    "observe-leaves-a-paused-domain-paused": (
        domain(management=OBSERVE), (S.PAUSED, R.UNKNOWN), history(),
        (A.REPORT, C.CONTROLLER, "state running wanted, paused seen", None)),
    "observe-never-stops": (domain(OFF, management=OBSERVE), (S.RUNNING, R.BOOTED), history(),
                            (A.REPORT, C.CONTROLLER, "state shutoff wanted, running seen", None)),
    "observe-never-applies": (
        domain(management=OBSERVE, memory=1024 * MiB), (S.RUNNING, R.BOOTED),
        history(live_spec=BASE, classification={"memory": ChangeKind.LIVE}),
        (A.REPORT, C.CONTROLLER, "Drift: spec differs: memory", None)),
    "observe-never-undefines": (
        None, (S.SHUTOFF, R.SHUTDOWN), history(last_spec=OBSERVED),
        (A.REPORT, C.CONTROLLER, "Drift: manifest removed, domain defined", None)),
    "observe-as-desired-is-nothing": (domain(management=OBSERVE), (S.RUNNING, R.BOOTED),
                                      history(), (A.NOTHING, C.CONTROLLER, "as desired", None)),
    "observe-carries-out-an-api-start": (
        domain(management=OBSERVE), (S.SHUTOFF, R.DESTROYED),
        history(override=api(ApiAction.START)), (A.START, C.API, "start through the API", None)),
    "observe-carries-out-an-api-stop": (
        domain(management=OBSERVE), (S.RUNNING, R.BOOTED),
        history(override=api(ApiAction.STOP)), (A.SHUTDOWN, C.API, "stop through the API", None)),
    "enforce-after-observe-starts": (domain(), (S.SHUTOFF, R.CRASHED),
                                     history(last_stop=stop(R.CRASHED, C.EXTERNAL, epoch=0)),
                                     (A.START, C.MANIFEST, "starting", None)),
    "dependency-not-ready-waits": (
        domain(depends_on=("db",)), (S.SHUTOFF, R.UNKNOWN),
        history(waiting_for=("db: not Ready (shutoff)",)),
        (A.NOTHING, C.CONTROLLER, "waiting for dependency: db: not Ready (shutoff)", None)),
    "dependency-waits-for-a-restore-too": (
        domain(), (S.SHUTOFF, R.SAVED), history(saved=image(), waiting_for=("db: no such domain",)),
        (A.NOTHING, C.CONTROLLER, "waiting for dependency: db: no such domain", None)),
    "dependency-does-not-hold-a-stop": (
        domain(OFF), (S.RUNNING, R.BOOTED), history(waiting_for=("db: not Ready",)),
        (A.SHUTDOWN, C.MANIFEST, "desired shutoff", None)),
    "removal-waits-for-dependents": (
        None, (S.RUNNING, R.BOOTED), history(dependents_up=("app",)),
        (A.NOTHING, C.CONTROLLER, "waiting for its dependents to stop first: app", None)),
    "removal-without-dependents-up-stops": (
        None, (S.RUNNING, R.BOOTED), history(),
        (A.SHUTDOWN, C.MANIFEST, "manifest removed: shutting down", 0.0)),
    "no-start-slot-waits": (domain(), (S.SHUTOFF, R.UNKNOWN), history(start_slot=False),
                            (A.NOTHING, C.CONTROLLER, "waiting for a start slot", None)),
}


@pytest.mark.parametrize(("desired", "observed", "hist", "expected"), ROWS.values(),
                         ids=ROWS.keys())
def test_decide(desired: Domain | None, observed: tuple[State, Reason], hist: History,
                expected: tuple[Action, Cause, str, float | None]) -> None:
    plan = decide(desired, Live(*observed), hist)
    action, cause, words, requeue = expected
    assert (plan.action, plan.cause, plan.requeue_after) == (action, cause, requeue), plan.reason
    assert words in plan.reason


# onCrash × restartPolicy × how the domain ended: libvirt applies on_crash to guest panics
# only (a panicked qemu guest's stop: shutoff/crashed, cause guest); a kill -9 (cause external)
# and a container's failed init are failures for the restart policy. Every one of them counts
# for the crash-loop backoff, so a start waits for it (last column: started once it is over).
_PANIC = stop(R.CRASHED, C.GUEST)
_KILLED = stop(R.CRASHED, C.EXTERNAL)
_ON_CRASH_TABLE = [
    # onCrash,         policy,      stop,    driver,          started?
    (LA.DESTROY, P.ALWAYS, _PANIC, DriverName.QEMU, True),
    (LA.DESTROY, P.ON_FAILURE, _PANIC, DriverName.QEMU, True),
    (LA.DESTROY, P.NEVER, _PANIC, DriverName.QEMU, False),
    (LA.RESTART, P.ALWAYS, _PANIC, DriverName.QEMU, True),
    (LA.RESTART, P.ON_FAILURE, _PANIC, DriverName.QEMU, True),
    (LA.RESTART, P.NEVER, _PANIC, DriverName.QEMU, True),  # onCrash restart beats Never
    (LA.COREDUMP_RESTART, P.NEVER, _PANIC, DriverName.QEMU, True),
    (LA.PRESERVE, P.ALWAYS, _PANIC, DriverName.QEMU, True),  # an operator's destroy of it
    (LA.PRESERVE, P.ON_FAILURE, _PANIC, DriverName.QEMU, True),
    (LA.PRESERVE, P.NEVER, _PANIC, DriverName.QEMU, False),
    (LA.DESTROY, P.ALWAYS, _KILLED, DriverName.QEMU, True),
    (LA.DESTROY, P.ON_FAILURE, _KILLED, DriverName.QEMU, True),
    (LA.DESTROY, P.NEVER, _KILLED, DriverName.QEMU, False),
    (LA.RESTART, P.ALWAYS, _KILLED, DriverName.QEMU, True),
    (LA.RESTART, P.ON_FAILURE, _KILLED, DriverName.QEMU, True),
    (LA.RESTART, P.NEVER, _KILLED, DriverName.QEMU, False),  # a kill -9 is no onCrash
    (LA.PRESERVE, P.ALWAYS, _KILLED, DriverName.QEMU, True),
    (LA.PRESERVE, P.NEVER, _KILLED, DriverName.QEMU, False),
    (LA.RESTART, P.NEVER, _PANIC, DriverName.LXC, False),  # a failed init is no panic
    (LA.RESTART, P.ON_FAILURE, _PANIC, DriverName.LXC, True),
]


@pytest.mark.parametrize(("on_crash", "policy", "last", "driver", "started"), _ON_CRASH_TABLE,
                         ids=[f"{a.value}-{p.value}-{s.cause.value}-{d.value}"
                              for a, p, s, d, _ in _ON_CRASH_TABLE])
def test_on_crash_and_restart_policy(on_crash: LifecycleAction, policy: RestartPolicy,
                                     last: LastStop, driver: DriverName, started: bool) -> None:
    want = domain(restart_policy=policy, lifecycle=Lifecycle(on_crash=on_crash), driver=driver)
    off = (S.SHUTOFF, R.CRASHED)
    plan = decide(want, Live(*off), history(last_stop=last))
    if not started:
        assert (plan.action, plan.cause) == (A.REPORT, C.CONTROLLER), plan.reason
        assert "left off until the manifest changes" in plan.reason
        return
    assert (plan.action, plan.cause) == (A.START, C.CONTROLLER), plan.reason
    onrestart = on_crash in (LA.RESTART, LA.COREDUMP_RESTART) and last is _PANIC \
        and driver is DriverName.QEMU
    assert plan.reason.startswith(f"onCrash {on_crash.value}" if onrestart
                                  else f"restartPolicy {policy.value}"), plan.reason
    # the crash counted for the backoff: while it runs, the start waits
    waiting = decide(want, Live(*off), history(last_stop=last, failures=1,
                                               backoff_until=NOW + 10))
    assert (waiting.action, waiting.requeue_after) == (A.NOTHING, 10.0), waiting.reason


@pytest.mark.parametrize("on_crash", [LA.DESTROY, LA.RESTART, LA.COREDUMP_RESTART])
@pytest.mark.parametrize("policy", list(P))
def test_a_panicked_guest_is_destroyed_as_the_guests_crash(on_crash: LifecycleAction,
                                                           policy: RestartPolicy) -> None:
    """The destroy decide() plans for onCrash is the guest's (cause guest), whatever the
    policy, so the stop it ends in is the crash, never a controller's restart."""
    want = domain(restart_policy=policy, lifecycle=Lifecycle(on_crash=on_crash))
    plan = decide(want, Live(S.CRASHED, R.PANICKED), history())
    assert (plan.action, plan.cause) == (A.DESTROY, C.GUEST)


def test_apply_live_carries_the_live_changes_only() -> None:
    desired = domain(memory=1024 * MiB, vcpus=2)
    plan = decide(desired, Live(S.RUNNING, R.BOOTED),
                  history(live_spec=BASE, classification={"memory": ChangeKind.LIVE,
                                                          "vcpus": ChangeKind.RESTART}))
    assert plan.action is A.APPLY_LIVE
    assert [c.path for c in plan.changes] == ["memory"]
    assert "pending restart: vcpus" in plan.reason


@pytest.mark.parametrize(("row", "why"), [
    ("restart-only-change-discards-the-image", "restart-only changes since the save (memory)"),
    ("force-boot-discards-the-image", "forced boot (domctl start --force-boot by uid 1000)"),
    ("restore-at-start", ""), ("running-first-start", ""),
])
def test_a_start_says_why_it_discards_the_image(row: str, why: str) -> None:
    """The executor discards the image before the boot and puts `discard` in the started
    event's message."""
    desired, observed, hist, _ = ROWS[row]
    assert decide(desired, Live(*observed), hist).discard == why


def test_restart_carries_every_change() -> None:
    desired = domain(memory=1024 * MiB, vcpus=2, update_policy=UpdatePolicy.RESTART)
    plan = decide(desired, Live(S.RUNNING, R.BOOTED),
                  history(live_spec=BASE, classification={"memory": ChangeKind.LIVE,
                                                          "vcpus": ChangeKind.RESTART}))
    assert plan.action is A.RESTART
    assert sorted(c.path for c in plan.changes) == ["memory", "vcpus"]


# --- properties ------------------------------------------------------------------------

desired_domains = st.none() | st.builds(
    domain, state=st.sampled_from(DesiredState),
    restart_policy=st.sampled_from(RestartPolicy), update_policy=st.sampled_from(UpdatePolicy),
    lifecycle=st.builds(Lifecycle, on_poweroff=st.sampled_from(LifecycleAction),
                        on_reboot=st.sampled_from(LifecycleAction),
                        on_crash=st.sampled_from(LifecycleAction)),
    memory=st.sampled_from([512 * MiB, 1024 * MiB]), management=st.sampled_from(Management))
histories = st.builds(
    History, now=st.just(NOW), epoch=st.integers(0, 2),
    last_stop=st.none() | st.builds(LastStop, st.sampled_from(Reason), st.sampled_from(Cause),
                                    st.integers(0, 2)),
    failures=st.integers(0, 5),
    backoff_until=st.none() | st.floats(NOW - 100, NOW + 100),
    stalled=st.none() | st.builds(Stalled, st.just("bad"), st.integers(0, 2)),
    live_spec=st.none() | st.just(BASE) | st.just(BIG),
    classification=st.sampled_from([{}, LIVE_MEMORY, RESTART_MEMORY]),
    override=st.none() | st.builds(api, st.sampled_from(ApiAction), st.integers(0, 2),
                                   st.floats(0, NOW), st.booleans()),
    saved=st.none() | st.builds(image, st.just(BASE) | st.just(BIG), st.booleans()),
    saved_classification=st.sampled_from([{}, LIVE_MEMORY, RESTART_MEMORY]),
    host_shutdown=st.none() | st.builds(hold, st.sampled_from(StopMode)),
    saving=st.booleans(), waiting_for=st.sampled_from([(), ("db: not Ready",)]),
    start_slot=st.booleans(), last_spec=st.none() | st.just(OBSERVED))
lives = st.builds(Live, st.sampled_from(State), st.sampled_from(Reason))


@given(desired_domains, lives, histories)
def test_decide_is_total_and_only_plans_allowed_moves(desired: Domain | None, live: Live,
                                                      hist: History) -> None:
    plan = decide(desired, live, hist)
    assert isinstance(plan, Plan) and plan.reason
    assert plan.requeue_after is None or plan.requeue_after >= 0
    if plan.action in FIRST_TRIGGER:
        assert allowed(live.state, FIRST_TRIGGER[plan.action]), (live, plan)
    if plan.action is A.APPLY_LIVE:
        assert live.state in (S.RUNNING, S.BLOCKED, S.PAUSED)
    if plan.action is A.UNDEFINE:
        assert desired is None and live.state is S.SHUTOFF
    if live.state is S.NOSTATE:
        assert plan.action is A.REPORT or hist.saving
    if hist.host_shutdown is not None and desired is not None:
        assert plan.action not in (A.START, A.START_PAUSED, A.RESTORE), plan.reason
    if plan.action is A.RESTORE:
        assert hist.saved is not None and not plan.discard
    if plan.discard:
        assert hist.saved is not None and plan.action in (A.START, A.START_PAUSED)
    if plan.action in (A.START, A.START_PAUSED, A.RESTORE):
        assert not hist.waiting_for and hist.start_slot, plan.reason
    management = desired.spec.management if desired is not None else (
        hist.last_spec.management if hist.last_spec is not None else Management.ENFORCE)
    if management is Management.OBSERVE and plan.action not in (A.NOTHING, A.REPORT):
        assert plan.cause is C.API, plan.reason  # only what a user asked for through the API


@given(desired_domains, lives, histories)
def test_decide_is_deterministic(desired: Domain | None, live: Live, hist: History) -> None:
    assert decide(desired, live, hist) == decide(desired, live, hist)


@given(st.sampled_from(State), st.sampled_from(Reason), histories)
def test_a_removed_domain_is_only_ever_brought_down(state: State, reason: Reason,
                                                    hist: History) -> None:
    plan = decide(None, Live(state, reason), hist)
    assert plan.action in (A.SHUTDOWN, A.DESTROY, A.RESUME, A.UNDEFINE, A.REPORT, A.NOTHING)
