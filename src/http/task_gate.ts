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
 * refuse whatever the task: those go on with a task id nobody was issued in
 * place of the one the caller does not own (a 2026-07-28 server refuses
 * them as before, an older one answers "not found"), and the decision is an
 * allow with the reason `unknown-task` (or `not-task-owner`).
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
  renamedMcpName,
  taskIdOfResult,
  taskRequest,
  taskTtlOfResult,
  unissuedTaskId,
} from "./tasks.ts";
import type { RefusalReason } from "./refusals.ts";
import { registry } from "./registry_failure.ts";
import type { GuardContext, GuardReason, GuardTaskOwners } from "./types.ts";

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
 * handler's answer, and whether it rewrote the message (a cursor opened, a
 * task id replaced), so the body the handler gets must be serialized again.
 */
export interface GatePass {
  wrap: ResponseWrap | null;
  rewritten: boolean;
  /** The `Mcp-Name` header the handler must get instead of the client's (a task id replaced). */
  mcpName?: string;
  /**
   * The reason of the allow decision, when not `"allowed"`: `"unknown-task"` or
   * `"not-task-owner"` for a task id replaced by one nobody was issued.
   */
  reason?: GuardReason;
  /** The task id it replaced (the one the caller named), for the audit trail. */
  task?: string;
}

/** The task rules of one guard. */
export class TaskGate {
  readonly #tasks: GuardTaskOwners;
  readonly #hideOthers: boolean;
  readonly #report: (error: unknown, context: string) => void;
  readonly #cursors: CursorSeal;
  /** The task id sent in place of one the caller does not own (see `#serverRefused`). */
  #unissued: string;

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
    this.#unissued = unissuedTaskId(secret);
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
    const refusal = await this.#access(taskId, owner, id, refuse);
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
        const header = request.headers.get("mcp-name");
        if (task.serverRefuses) {
          // An `Mcp-Name` is a reference too: one that names another task than the body's is
          // refused here as anywhere (a layer in front of the server may route by it). Without
          // one, the server answers what it does (it refuses the request whatever the task).
          if (header !== null) {
            const name = checkMcpName(header, task.taskId, task.modern);
            if (!name.ok) return refuse("header-mismatch", id, name.message);
          }
          return this.#serverRefused(request, message.params, task.taskId, owner, id, refuse);
        }
        const name = checkMcpName(header, task.taskId, task.modern);
        if (!name.ok) return refuse("header-mismatch", id, name.message);
        return this.#access(task.taskId, owner, id, refuse);
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
   * Who the task is bound to (`null`: nobody); `true` when it is `owner`
   * (the use then refreshes its binding).
   */
  async #boundTo(taskId: string, owner: string | null): Promise<string | null | true> {
    const bound = await registry(this.#tasks.ownerOf(taskId));
    if (bound !== null && bound === owner) {
      this.#tasks.touch?.(taskId, owner).catch((err) => this.#report(err, "touch-task"));
      return true;
    }
    return bound;
  }

  /**
   * `null` when `owner` may use the task (the use refreshes its binding),
   * else the refusal. A task bound to nobody is unknown.
   */
  async #access(
    taskId: string,
    owner: string | null,
    id: string | number | null,
    refuse: Refuse,
  ): Promise<Response | null> {
    const bound = await this.#boundTo(taskId, owner);
    if (bound === true) return null;
    if (bound === null) return refuse("unknown-task", id);
    return refuse("not-task-owner", id, "", this.#hideOthers ? "unknown-task" : undefined);
  }

  /**
   * A request a 2026-07-28 server refuses whatever the task (see
   * `TaskRequest.serverRefuses`). Its era marker is the client's word, and a
   * 2025-11-25 server ignores it and answers with the task: so unless
   * `owner` owns the task (`null`: as it is), the task id goes on as one
   * nobody was issued, in `params.taskId` and in an `Mcp-Name` naming it. A
   * 2026-07-28 server then refuses the request as before; an older one
   * answers its own "not found", as for any id nobody owns. Another
   * principal's task is refused (`not-task-owner`) unless `hideOthers`
   * answers it as an unknown one: replaced too, so neither answer tells it
   * from an id nobody owns.
   */
  async #serverRefused(
    request: Request,
    params: unknown,
    taskId: string,
    owner: string | null,
    id: string | number | null,
    refuse: Refuse,
  ): Promise<Response | GatePass | null> {
    const bound = await this.#boundTo(taskId, owner);
    if (bound === true) return null;
    if (bound !== null && !this.#hideOthers) return refuse("not-task-owner", id);
    const substitute = await this.#substitute();
    (params as { taskId: string }).taskId = substitute;
    const header = request.headers.get("mcp-name");
    const mcpName = header === null ? null : renamedMcpName(header, taskId, substitute);
    return {
      wrap: null,
      rewritten: true,
      ...(mcpName === null ? {} : { mcpName }),
      reason: bound === null ? "unknown-task" : "not-task-owner",
      task: taskId,
    };
  }

  /**
   * The guard's unissued task id: the same for every request (so every
   * answer to one is the same answer), unless a task of that id is bound
   * (a server issued it, against all odds): then a fresh random one, from
   * then on.
   */
  async #substitute(): Promise<string> {
    const unissued = this.#unissued;
    if (await registry(this.#tasks.ownerOf(unissued)) === null) return unissued;
    if (this.#unissued === unissued) this.#unissued = unissuedTaskId();
    return this.#unissued;
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
