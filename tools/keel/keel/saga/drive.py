"""Driving one saga held by this process: its body forward, its compensations backward.

Every write goes through the saga's lease (keel.saga.lease), renewed in the background while
the saga is driven; if another process takes the saga (this one stalled past its lease), the
driving stops at once and leaves the saga to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from keel.runtime import logs
from keel.saga import store
from keel.saga.lease import Lease, LeaseLostError
from keel.saga.run import (
    Run,
    SagaError,
    Step,
    StepOrderError,
    StepRefusedError,
    _RetryLaterError,
    _UnwindError,
    action_key,
    attempts,
    describe,
    step_span,
)

if TYPE_CHECKING:
    from keel.saga.saga import Saga

log = logs.get_logger("keel.saga")


async def drive(saga: Saga[Any], lease: Lease) -> store.SagaState:
    """Drive the saga `lease` holds until it ends, or waits for a later pass (a compensation
    or a step after the pivot still failing: its lease released); its state. Cancelled, it
    releases the lease (the saga is resumed by the next pass or start) and re-raises."""
    work = asyncio.create_task(_steps(saga, lease), name=f"keel-saga-{lease.saga_id}")
    keeper = asyncio.create_task(lease.keep(work.cancel), name="keel-saga-lease")
    try:
        await work
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # our caller's cancellation (a shutdown): the work released the lease
        log.warning("saga taken by another process", saga=lease.saga_id, name=saga.name)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    state = await store.load(saga.db, lease.saga_id)
    assert state is not None
    return state


async def _steps(saga: Saga[Any], lease: Lease) -> None:
    try:
        await _run(saga, lease)
    except LeaseLostError:
        log.warning("saga taken by another process", saga=lease.saga_id, name=saga.name)
    except asyncio.CancelledError:
        if not lease.lost:
            await asyncio.shield(_release(lease))
        raise


async def _release(lease: Lease) -> None:
    with contextlib.suppress(LeaseLostError):
        await store.release(lease)


async def _run(saga: Saga[Any], lease: Lease) -> None:
    state = await store.load(saga.db, lease.saga_id)
    assert state is not None
    run: Run[Any] = Run(state, saga.settings.saga_backoff, lease)
    try:
        await saga.body(run)
        mismatch = run.unreplayed()
        if mismatch is not None:
            raise mismatch
    except _UnwindError:
        pass
    except SagaError as error:
        await _stop(run, lease, error)
        return
    except _RetryLaterError as error:  # after the pivot: the next pass tries again
        log.warning(
            "saga step failed after the pivot", saga=run.id, name=run.name, error=str(error)
        )
        await store.release(lease)
        return
    except Exception as error:  # a step failed, or the body raised: undo what was done
        mismatch = None if run.failure else run.unreplayed()
        if mismatch is not None:
            await _stop(run, lease, mismatch)
            return
        reason = str(error) if isinstance(error, StepRefusedError) else run.failure
        reason = reason or describe(run.last or "saga", error)
        if run.status == store.FORWARD:
            log.error("saga stopped after its pivot", saga=run.id, name=run.name, error=reason)
            await store.set_status(lease, store.FAILED, error=reason, stopped_from=run.status)
            return
        if run.status == store.RUNNING:
            log.info("saga compensating", saga=run.id, name=run.name, reason=reason)
            await store.set_status(lease, store.COMPENSATING, error=reason)
            run.status = store.COMPENSATING
    else:
        if run.status in {store.RUNNING, store.FORWARD}:
            await store.set_status(lease, store.COMPLETED)
            return
    if await _compensate(saga, run, lease):
        await store.set_status(lease, store.COMPENSATED)
    else:
        await store.release(lease)


async def _stop(run: Run[Any], lease: Lease, error: SagaError) -> None:
    """Stop the saga as FAILED for a person: the code and the record disagree."""
    log.error("saga stopped", saga=run.id, name=run.name, error=str(error))
    if isinstance(error, StepOrderError):
        await store.step_failed(lease, error.position, str(error))
    await store.set_status(lease, store.FAILED, error=str(error), stopped_from=run.status)


async def _compensate(saga: Saga[Any], run: Run[Any], lease: Lease) -> bool:
    """Undo the steps that may have had an effect, last first; False if one still fails (its
    error recorded on the step; the saga's first error stays)."""
    for done in reversed(run.done):
        compensate = done.compensate
        if compensate is not None:
            key = f"{action_key(run.id, done.name, done.retried)}/compensate"

            def call(attempt: int, fn: Any = compensate, key: str = key, at: Any = done) -> Any:
                return fn(Step(run.id, at.name, key, attempt, at.retried), at.result)

            try:
                with step_span(run, done.name, undo=True):
                    await attempts(call, saga.settings.saga_backoff)
            except Exception as error:
                reason = f"compensating {describe(done.name, error)}"
                log.warning("saga compensation failed", saga=run.id, error=reason)
                await store.step_failed(lease, done.position, reason)
                return False
        await store.record_step(lease, done.position, done.name, store.UNDONE)
    return True
