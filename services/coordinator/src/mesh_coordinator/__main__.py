"""`python -m mesh_coordinator`: serve the mesh's A2A HTTP face until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from a2amesh import tracing
from a2amesh.binding import MeshRequester
from a2amesh.binding.responder import SHUTDOWN_GRACE, Responder
from a2amesh.internal import internal_client
from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import AgentSettings, CoordinatorSettings
from mesh_coordinator.app import authenticator, build_app
from mesh_coordinator.delegate import Delegate
from mesh_coordinator.directory import RegistryClient
from mesh_coordinator.grpc_face import grpc_server, serve_grpc
from mesh_coordinator.handler import MeshRequestHandler, retry_profile
from mesh_coordinator.push import DeliveryWorker
from mesh_coordinator.replicas import PatientTaskStore
from mesh_coordinator.workflows import WorkflowAgent

log = logging.getLogger("mesh_coordinator")  # run as __main__


def workflow_responder(settings: CoordinatorSettings, delegate: Delegate) -> Responder:
    """The workflows agent the coordinator hosts: its own identity on the mesh, the coordinator's requester."""
    agent_settings = AgentSettings(
        org=settings.org,
        unit=settings.unit,
        mqtt=settings.workflows_mqtt or settings.mqtt,
        agent_id=settings.workflows_id,
        http_port=0,
        max_concurrent=64,
        max_queued=256,
        log_level=settings.log_level,
    )
    agent = WorkflowAgent(agent_settings, delegate)
    return Responder(agent.card(), agent.handle, agent_settings, on_cancel=agent.on_cancel)


def main() -> None:
    settings = CoordinatorSettings()
    setup_logging(settings.log_level, settings.log_json)

    async def serve(stop: asyncio.Event) -> None:
        requester = MeshRequester(settings.mqtt, settings.service_address("coordinator"))
        async with internal_client(settings, timeout=10.0) as client:  # mutual TLS when MESH_INTERNAL__ENABLED
            registry = RegistryClient(settings.registry_url, client)
            store = PatientTaskStore(settings.taskstore_url, client, settings.replica_read_wait)
            handler = MeshRequestHandler(settings, requester, registry, store)
            public_url = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
            app = build_app(handler, registry, public_url)
            # the A2A gRPC binding, beside HTTP on its own port: bound before anything runs, so a port already
            # taken ends the process at once with the reason
            grpc = None
            if settings.grpc_port is not None:
                try:
                    grpc = grpc_server(handler, settings, authenticator(settings, public_url))
                except OSError as error:
                    log.error("%s; shutting down", error)
                    raise SystemExit(1) from None
            delegate = Delegate(
                requester, handler.router, retry_profile(settings), handler.credentials, handler.hub.note
            )
            workflows = workflow_responder(settings, delegate)
            # no access log line per request below DEBUG: the audit trail (mesh.audit) already records every A2A
            # call with its caller and outcome, and the line cost about 1.5% of the coordinator's CPU per task
            server = http_server(
                tracing.asgi(app),
                settings.http_host,
                settings.http_port,
                settings.log_level,
                access_log=settings.log_level.upper() == "DEBUG",
            )
            deliveries = DeliveryWorker(settings, handler.push_store, handler.webhooks)
            handler.push.wake = deliveries.wake
            workers = [
                workflows.run(stop),
                handler.reconciler.run(stop),
                handler.owners.recorder.run(stop),
                deliveries.run(stop),
            ]
            if grpc is not None:
                workers.append(serve_grpc(grpc, stop))
            # the link runs from here on, and closes in the finally whatever ends the service
            link_stop = asyncio.Event()
            link = asyncio.create_task(requester.run(link_stop))
            # the hosted workflows agent drains like any agent before it goes offline
            try:
                await serve_until(stop, server, *workers, grace=SHUTDOWN_GRACE + 5)
            finally:  # also when HTTP could not start: the link closes before the process exits 1
                await handler.hub.close()
                link_stop.set()
                await link

    run(serve)


if __name__ == "__main__":
    main()
