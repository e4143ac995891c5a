"""Print control (print, pause, resume, cancel), emergency stop, firmware restart and status."""

from __future__ import annotations

from starlette.requests import Request

from printhost.api import jobqueue
from printhost.api.auth.guard import Principal
from printhost.api.endpoint import EndpointSet
from printhost.api.schemas import (EMPTY, FIRMWARE_RESTARTED, PRINT_REQUEST, PRINT_RESPONSE,
                                   RESULT_OK, STATUS, read_json)
from printhost.ipc.channel import Command, Reply

endpoints = EndpointSet()


# A firmware restart reboots and reconnects the MCU before it is answered.
FIRMWARE_RESTART_TIMEOUT_S = 30.0


async def send_command(request: Request, command: Command, args: dict | None = None,
                       timeout_s: float | None = None) -> Reply:
    """Forward a command to the control process and map its refusal to an API error."""
    return await jobqueue.command(request.app.state.link, command, args, timeout_s)


@endpoints.route("GET", "/api/v1/status", summary="Printer and job status", role="viewer",
                 response=STATUS)
async def status(request: Request, _: Principal | None) -> dict:
    """The latest snapshot published by the control process (`control.status_hz`, 10 times
    a second by default, and with the reply to every command).

    When the control process is dead or frozen, `state` is `error` and `error` says why.
    """
    return request.app.state.link.status()


@endpoints.route("POST", "/api/v1/print", summary="Start printing an uploaded file",
                 role="operator", request=PRINT_REQUEST, response=PRINT_RESPONSE,
                 errors=(404, 409, 503), rate_limited=True)
async def start_print(request: Request, principal: Principal | None) -> dict:
    """Start a job for a file uploaded with `POST /api/v1/files`, named by its path
    (`cube.gcode`, `parts/left.gcode`). 409 when a job is in progress, and (with the other
    job's `job_id`) when the same file content already has a queued job: start that one
    (`POST /api/v1/jobs/{job_id}/start`)."""
    body = await read_json(request, PRINT_REQUEST)
    assert principal is not None
    job_id = await request.app.state.queue.print_now(body["file"], principal.username)
    return {"result": "ok", "job_id": job_id}


def _control_route(command: Command, path: str, summary: str, doc: str):
    @endpoints.route("POST", path, summary=summary, role="operator", request=EMPTY,
                     response=RESULT_OK, errors=(409, 503), description=doc)
    async def handler(request: Request, principal: Principal | None) -> dict:
        await read_json(request, EMPTY, allow_empty=True)
        await send_command(request, command)
        if principal is not None:
            await request.app.state.queue.requested(command.value.lower(), principal.username)
        return {"result": "ok"}
    return handler


pause = _control_route(
    Command.PAUSE, "/api/v1/pause", "Pause the running job",
    "Stops feeding new moves; queued moves finish, then the pause sequence (retract, lift Z, "
    "park) runs. Heaters keep their targets. Status shows `paused` once the toolhead is at "
    "rest. 409 `No job in progress` when no job is printing.")
resume = _control_route(
    Command.RESUME, "/api/v1/resume", "Resume a paused job",
    "Returns to the exact position where printing stopped, undoes the retract, restores "
    "modes and factors, and continues with the next line. 409 `Job not paused` otherwise.")
cancel = _control_route(
    Command.CANCEL, "/api/v1/cancel", "Cancel the current job",
    "Stops feeding moves, turns heaters and part fan off at once, parks if configured and "
    "records the job as cancelled. 409 `No job to cancel` when no job is printing or paused.")


@endpoints.route("POST", "/api/v1/printer/emergency_stop", summary="Emergency stop (M112)",
                 role="operator", request=EMPTY, response=RESULT_OK, errors=(503,))
async def emergency_stop(request: Request, principal: Principal | None) -> dict:
    """Immediate, like `M112`: every heater off, the MCU told to stop at once (queued
    moves are dropped, outputs go to their safe state), the PSU relay cut when one is
    configured to, a running job ends `error`, and the printer is latched in `error`
    until `POST /api/v1/printer/firmware_restart`. Accepted in any state, also when the
    printer is already in error. 503 only when the control process cannot be reached
    (the MCU then turns its heaters off by itself within their max_duration)."""
    await read_json(request, EMPTY, allow_empty=True)
    by = principal.username if principal is not None else ""
    await send_command(request, Command.EMERGENCY_STOP, {"by": by})
    return {"result": "ok"}


@endpoints.route("POST", "/api/v1/printer/firmware_restart",
                 summary="Restart the MCU firmware and clear a fault", role="operator",
                 request=EMPTY, response=FIRMWARE_RESTARTED, errors=(409, 503))
async def firmware_restart(request: Request, _: Principal | None) -> dict:
    """Clears an MCU shutdown or a fault latch, as Klipper's FIRMWARE_RESTART does: the
    MCU is rebooted with its `reset` command, connected and configured again, and the
    printer objects are built anew (heaters off, axes unhomed). Answers once the restart
    has ended (a second or two), with the printer `idle`. 409 while a job is printing,
    pausing, paused or cancelling, while a PID tune runs, while the e-stop button is
    pressed, or while another restart runs; 503 when the restart failed (the reason
    says why, e.g. the board cannot be reached or must be power-cycled)."""
    await read_json(request, EMPTY, allow_empty=True)
    reply = await send_command(request, Command.FIRMWARE_RESTART,
                               timeout_s=FIRMWARE_RESTART_TIMEOUT_S)
    return {"result": "ok", "state": str(reply.result.get("state", "idle"))}
