"""Azure Functions entry points (v2 programming model). Wiring only: the work lives in monitors.

Every timer runs its job through the service layer (monitors.service): under the job's lease,
with its run recorded, then the alerts it queued are dispatched. A timer that finds its job
already running (another instance, or the CLI) skips quietly.
"""

import json

import azure.functions as func

from monitors import entry
from monitors.service import Job

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("config_check")
@app.timer_trigger(arg_name="timer", schedule="%CONFIG_CHECK_SCHEDULE%", use_monitor=True)
async def config_check(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.CONFIG_CHECK)


@app.function_name("scan")
@app.timer_trigger(arg_name="timer", schedule="%SCAN_SCHEDULE%", use_monitor=True)
async def scan(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.SCAN)


@app.function_name("alerts")
@app.timer_trigger(arg_name="timer", schedule="%ALERTS_SCHEDULE%", use_monitor=True)
async def alerts(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.ALERTS)


@app.function_name("weekly_summary")
@app.timer_trigger(arg_name="timer", schedule="%SUMMARY_SCHEDULE%", use_monitor=True)
async def weekly_summary(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.WEEKLY_SUMMARY)


@app.function_name("weekly_report")
@app.route(route="reports/weekly", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def weekly_report(req: func.HttpRequest) -> func.HttpResponse:
    status, body = await entry.weekly_report(
        req.params.get("week"), tenant_text=req.params.get("tenant")
    )
    mimetype = "text/html" if status == 200 else "text/plain"
    return func.HttpResponse(body, status_code=status, mimetype=mimetype, charset="utf-8")


@app.function_name("rollup_report")
@app.route(route="reports/rollup", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def rollup_report(req: func.HttpRequest) -> func.HttpResponse:
    # Every registry tenant's week, worst first (docs/msp.md).
    status, body = await entry.rollup_report(req.params.get("week"))
    mimetype = "text/html" if status == 200 else "text/plain"
    return func.HttpResponse(body, status_code=status, mimetype=mimetype, charset="utf-8")


@app.function_name("subscriptions")
@app.timer_trigger(arg_name="timer", schedule="%SUBSCRIPTIONS_SCHEDULE%", use_monitor=True)
async def subscriptions(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.SUBSCRIPTIONS)


@app.function_name("notifications")
@app.timer_trigger(arg_name="timer", schedule="%NOTIFICATIONS_SCHEDULE%", use_monitor=True)
async def notifications(timer: func.TimerRequest) -> None:
    await entry.run_job(Job.NOTIFICATIONS)


# Many tenants (docs/msp.md): each timer above enqueues one message per enabled registry tenant
# instead of running its job, and these run them. Queue names are app-setting binding
# expressions (functions-bindings-expressions-patterns.md, "Binding expressions - app
# settings"); the connection is the host's storage, AzureWebJobsStorage, the account the app
# enqueues on. After maxDequeueCount (host.json: 5) failed tries the host moves a message to
# "<queue>-poison" (functions-bindings-storage-queue-trigger.md, "Poison messages").
@app.function_name("tenant_job")
@app.queue_trigger(
    arg_name="message", queue_name="%ETG_JOB_QUEUE%", connection="AzureWebJobsStorage"
)
async def tenant_job(message: func.QueueMessage) -> None:
    # A failed run raises here, so the host retries it.
    await entry.run_queued(message.get_body(), getattr(message, "dequeue_count", None))


@app.function_name("tenant_job_poison")
@app.queue_trigger(
    arg_name="message", queue_name="%ETG_JOB_QUEUE%-poison", connection="AzureWebJobsStorage"
)
async def tenant_job_poison(message: func.QueueMessage) -> None:
    await entry.poisoned(message.get_body())


@app.function_name("graph_notifications")
@app.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    # Change and lifecycle notifications and the validation handshake all arrive here.
    status, body, mimetype = await entry.graph_notifications(
        req.params, req.headers.get("content-type"), req.get_body()
    )
    return func.HttpResponse(body, status_code=status, mimetype=mimetype)


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    status, body = await entry.health()
    return func.HttpResponse(
        json.dumps(body, indent=2), status_code=status, mimetype="application/json"
    )


# The operator console. Anonymous for the Functions host: App Service Authentication (Entra ID)
# signs operators in before a request reaches the app, and the card's links carry no key.
def _console_answer(status: int, body: str, headers: dict[str, str]) -> func.HttpResponse:
    return func.HttpResponse(
        body, status_code=status, headers=headers, mimetype="text/html", charset="utf-8"
    )


async def _console(action: str, req: func.HttpRequest) -> func.HttpResponse:
    status, body, headers = await entry.console(
        action,
        req.method,
        req.url,
        dict(req.headers),
        dict(req.params),
        req.route_params.get("id"),
        req.get_body(),
    )
    return _console_answer(status, body, headers)


@app.function_name("console_anomalies")
@app.route(route="console/anomalies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_anomalies(req: func.HttpRequest) -> func.HttpResponse:
    return await _console("list", req)


@app.function_name("console_anomaly")
@app.route(route="console/anomalies/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def console_anomaly(req: func.HttpRequest) -> func.HttpResponse:
    return await _console("show", req)


@app.function_name("console_acknowledge")
@app.route(
    route="console/anomalies/{id}/acknowledge",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def console_acknowledge(req: func.HttpRequest) -> func.HttpResponse:
    return await _console("acknowledge", req)


@app.function_name("console_suppress")
@app.route(
    route="console/anomalies/{id}/suppress", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
async def console_suppress(req: func.HttpRequest) -> func.HttpResponse:
    return await _console("suppress", req)
