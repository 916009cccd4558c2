/**
 * Task ownership for one request (the guard's `tasks` option): refuses any
 * reference to another principal's task, binds a created task's id to its
 * creator before the creator can read it, and keeps a task list (and its
 * cursors) to the caller's own tasks.
 *
 * A message refers to a task by `params.taskId` (`tasks/get`, `tasks/result`,
 * `tasks/cancel`, `tasks/update`) and by
 * `_meta["io.modelcontextprotocol/related-task"]` (any request or
 * notification, and the responses a client posts back): every reference is
 * checked, in both protocol eras. A task bound to nobody is refused as
 * unknown in every mode, except on the requests a 2026-07-28 server must
 * refuse whatever the task (its own answer then stands).
 *
 * @module
 */

import { MAX_KEEP_MS } from "../core/owner_types.ts";
import type { BindOptions } from "../registry/owner_options.ts";
import type { RpcMessage } from "./jsonrpc.ts";
import { rewriteResult, watchResponse } from "./response_watch.ts";
import { CursorSeal } from "./task_cursors.ts";
import {
  checkMcpName,
  isValidTaskId,
  relatedTask,
  taskIdOfResult,
  taskRequest,
  taskTtlOfResult,
} from "./tasks.ts";
import type { RefusalReason } from "./refusals.ts";
import { registry } from "./registry_failure.ts";
import type { GuardContext, GuardTaskOwners } from "./types.ts";

/** What a task gate does to the handler's answer. */
export type ResponseWrap = (response: Response) => Response;

/**
 * A task-creating request or `tasks/list` whose id is not a JSON-RPC id: the guard could not
 * find its answer to bind the task or filter the list, so it refuses it (any other request
 * with such an id reaches the handler, which answers it).
 */
const NO_ID = "Invalid Request: id must be a string or a finite number";

/** How the gate answers a refusal (the guard's own refusal path). */
export type Refuse = (
  reason: RefusalReason,
  id: string | number | null,
  detail?: string,
  as?: RefusalReason,
) => Response;

/**
 * What the gate decided for a request it lets through: a wrap for the
 * handler's answer, and whether it rewrote the message (a cursor opened), so
 * the body the handler gets must be serialized again.
 */
export interface GatePass {
  wrap: ResponseWrap | null;
  rewritten: boolean;
}

/** The task rules of one guard. */
export class TaskGate {
  readonly #tasks: GuardTaskOwners;
  readonly #hideOthers: boolean;
  readonly #report: (error: unknown, context: string) => void;
  readonly #cursors: CursorSeal;

  /**
   * `hideOthers`: another principal's task is answered as an unknown one;
   * `secret`: the guard's (cursors then open on every process sharing it).
   */
  constructor(
    tasks: GuardTaskOwners,
    hideOthers: boolean,
    report: (error: unknown, context: string) => void,
    secret?: string | Uint8Array,
  ) {
    this.#tasks = tasks;
    this.#hideOthers = hideOthers;
    this.#report = report;
    this.#cursors = new CursorSeal(secret);
  }

  /**
   * Who owns what `ctx`'s caller creates: its fingerprint; for an anonymous
   * caller (attach-only mode), its session, so that only the same session
   * reaches the task; `null` without either (nothing can be bound).
   */
  static ownerFor(ctx: GuardContext, sid: string | null): string | null {
    return ctx.fingerprint ?? (sid === null ? null : `anonymous-session:${sid}`);
  }

  /**
   * A refusal, what to do with a request let through, or `null` when there
   * is nothing to do: at once when no task registry needs asking (an
   * ordinary request), else a promise.
   */
  check(
    request: Request,
    message: RpcMessage,
    ctx: GuardContext,
    sid: string | null,
    refuse: Refuse,
  ): Response | GatePass | null | Promise<Response | GatePass | null> {
    const owner = TaskGate.ownerFor(ctx, sid);
    const id = message.kind === "request" ? message.id : null;
    const related = relatedTask(message);
    if (related.kind === "invalid") return refuse("invalid-params", id, related.message);
    if (related.kind === "task") {
      return this.#checkRelated(request, message, related.taskId, owner, id, refuse);
    }
    return this.#checkRequest(request, message, owner, id, refuse);
  }

  /** A message naming a related task: that task first, then the request itself. */
  async #checkRelated(
    request: Request,
    message: RpcMessage,
    taskId: string,
    owner: string | null,
    id: string | number | null,
    refuse: Refuse,
  ): Promise<Response | GatePass | null> {
    const refusal = await this.#access(taskId, owner, id, false, refuse);
    if (refusal !== null) return refusal;
    return await this.#checkRequest(request, message, owner, id, refuse);
  }

  /** The task rules of the request itself (`tasks/*`, a task-creating request). */
  #checkRequest(
    request: Request,
    message: RpcMessage,
    owner: string | null,
    id: string | number | null,
    refuse: Refuse,
  ): Response | GatePass | null | Promise<Response | GatePass | null> {
    if (message.kind !== "request") return null;
    const task = taskRequest(message);
    switch (task.kind) {
      case "none":
        return null;
      case "invalid":
        return refuse("invalid-params", id, task.message);
      case "access": {
        if (!task.serverRefuses) {
          const name = checkMcpName(request.headers.get("mcp-name"), task.taskId, task.modern);
          if (!name.ok) return refuse("header-mismatch", id, name.message);
        }
        return this.#access(task.taskId, owner, id, task.serverRefuses, refuse);
      }
      case "create":
        if (owner === null) return null; // anonymous and stateless: nobody to bind it to
        if (message.id === null) return refuse("invalid-request", null, NO_ID);
        return {
          wrap: (response) => this.#bindCreated(response, message.id, owner),
          rewritten: false,
        };
      case "list":
        if (message.id === null) return refuse("invalid-request", null, NO_ID);
        return this.#list(message.params, message.id, owner);
    }
  }

  /**
   * `null` when `owner` may use the task (the use refreshes its binding),
   * else the refusal. A task bound to nobody is unknown, unless
   * `serverAnswers` (a request the server refuses whatever the task).
   */
  async #access(
    taskId: string,
    owner: string | null,
    id: string | number | null,
    serverAnswers: boolean,
    refuse: Refuse,
  ): Promise<Response | null> {
    const bound = await registry(this.#tasks.ownerOf(taskId));
    if (bound !== null && bound === owner) {
      this.#tasks.touch?.(taskId, owner).catch((err) => this.#report(err, "touch-task"));
      return null;
    }
    if (bound === null) return serverAnswers ? null : refuse("unknown-task", id);
    return refuse("not-task-owner", id, "", this.#hideOthers ? "unknown-task" : undefined);
  }

  /** Binds the task a `tools/call` answer creates to `owner` before the answer is read. */
  #bindCreated(response: Response, id: string | number | null, owner: string): Response {
    return watchResponse(response, id, async (reply) => {
      const taskId = taskIdOfResult(reply.result);
      if (taskId === null) return;
      const ttl = taskTtlOfResult(reply.result);
      // The binding outlives idleness for as long as the task itself lives.
      const keep: BindOptions | undefined = ttl === null
        ? undefined
        : { keepMs: Math.min(ttl, MAX_KEEP_MS) };
      const bound = await this.#tasks.bind(taskId, owner, keep);
      if (bound !== "bound") {
        const error = new Error(
          `could not bind task ${JSON.stringify(taskId.slice(0, 64))}: ${bound}`,
        );
        this.#report(error, "bind-task");
        throw error; // the caller must not learn a task id nobody owns
      }
    });
  }

  /**
   * `tasks/list`: the cursor the caller sends is opened (one sealed for
   * another owner, forged, or raw, goes on as a cursor the server never
   * issued, so it gets the server's answer to a made-up one);
   * the answer keeps the caller's own tasks and seals its `nextCursor`.
   */
  async #list(
    params: unknown,
    id: string | number | null,
    owner: string | null,
  ): Promise<GatePass> {
    let rewritten = false;
    const cursor = (params as { cursor?: unknown } | undefined)?.cursor;
    if (typeof cursor === "string") {
      // Anything but this owner's own sealed cursor becomes one the server never issued.
      const opened = owner === null ? null : await this.#cursors.open(cursor, owner);
      const forwarded = opened ?? CursorSeal.unissued(cursor);
      if (forwarded !== cursor) {
        (params as { cursor: string }).cursor = forwarded;
        rewritten = true;
      }
    }
    const tasks = this.#tasks;
    const wrap = (response: Response) =>
      rewriteResult(response, id, async (reply) => {
        const result = reply.result as { tasks?: unknown; nextCursor?: unknown } | undefined;
        if (typeof result !== "object" || result === null) return reply;
        const out: Record<string, unknown> = { ...result };
        if (Array.isArray(result.tasks)) {
          const listed = result.tasks as { taskId?: unknown }[];
          const owners = await Promise.all(
            listed.map((t) => isValidTaskId(t?.taskId) ? tasks.ownerOf(t.taskId) : null),
          );
          out.tasks = listed.filter((_, i) => owner !== null && owners[i] === owner);
        }
        if (typeof result.nextCursor === "string") {
          if (owner === null) delete out.nextCursor;
          else out.nextCursor = await this.#cursors.seal(result.nextCursor, owner);
        }
        return { ...reply, result: out };
      });
    return { wrap, rewritten };
  }
}
