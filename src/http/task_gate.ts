/**
 * Task ownership for one request (the guard's `tasks` option): refuses
 * access to another principal's task, binds a created task's id to its
 * creator before the creator can read it, and filters a task list.
 *
 * @module
 */

import type { RpcMessage } from "./jsonrpc.ts";
import { rewriteResult, watchResponse } from "./response_watch.ts";
import { checkMcpName, isValidTaskId, taskIdOfResult, taskRequest } from "./tasks.ts";
import type { RefusalReason } from "./refusals.ts";
import { registry } from "./registry_failure.ts";
import type { GuardContext, GuardTaskOwners } from "./types.ts";

/** What a task gate does to the handler's answer. */
export type ResponseWrap = (response: Response) => Response;

/** How the gate answers a refusal (the guard's own refusal path). */
export type Refuse = (
  reason: RefusalReason,
  id: string | number,
  detail?: string,
  as?: RefusalReason,
) => Response;

/** The task rules of one guard. */
export class TaskGate {
  readonly #tasks: GuardTaskOwners;
  readonly #strict: boolean;
  readonly #hideOthers: boolean;
  readonly #report: (error: unknown, context: string) => void;

  /** `hideOthers`: another principal's task is answered as an unknown one. */
  constructor(
    tasks: GuardTaskOwners,
    strict: boolean,
    hideOthers: boolean,
    report: (error: unknown, context: string) => void,
  ) {
    this.#tasks = tasks;
    this.#strict = strict;
    this.#hideOthers = hideOthers;
    this.#report = report;
  }

  /**
   * A refusal, a wrap for the handler's answer (bind a created task's id;
   * filter a task list), or `null` when there is nothing to do.
   */
  async check(
    request: Request,
    message: RpcMessage,
    ctx: GuardContext,
    refuse: Refuse,
  ): Promise<Response | ResponseWrap | null> {
    if (message.kind !== "request") return null;
    const tasks = this.#tasks;
    const task = taskRequest(message);
    const fp = ctx.fingerprint;
    const id = message.id;
    switch (task.kind) {
      case "none":
        return null;
      case "invalid":
        return refuse("invalid-params", id, task.message);
      case "access": {
        const name = checkMcpName(request.headers.get("mcp-name"), task.taskId, task.modern);
        if (!name.ok) return refuse("header-mismatch", id, name.message);
        const owner = await registry(tasks.ownerOf(task.taskId));
        if (owner !== null ? owner === fp : !this.#strict) return null;
        if (owner === null) return refuse("unknown-task", id);
        return refuse("not-task-owner", id, "", this.#hideOthers ? "unknown-task" : undefined);
      }
      case "create":
        if (fp === null) return null; // attach-only, anonymous: nobody to bind it to
        return (response) =>
          watchResponse(response, id, async (reply) => {
            const taskId = taskIdOfResult(reply.result);
            if (taskId === null) return;
            const bound = await tasks.bind(taskId, fp);
            if (bound !== "bound") {
              const error = new Error(
                `could not bind task ${JSON.stringify(taskId.slice(0, 64))}: ${bound}`,
              );
              this.#report(error, "bind-task");
              throw error; // the caller must not learn a task id nobody owns
            }
          });
      case "list":
        return (response) =>
          rewriteResult(response, id, async (reply) => {
            const result = reply.result as { tasks?: unknown } | undefined;
            if (!Array.isArray(result?.tasks)) return reply;
            const listed = result.tasks as { taskId?: unknown }[];
            const owners = await Promise.all(
              listed.map((t) => isValidTaskId(t?.taskId) ? tasks.ownerOf(t.taskId) : null),
            );
            const own = listed.filter((_, i) => fp !== null && owners[i] === fp);
            return { ...reply, result: { ...result, tasks: own } };
          });
    }
  }
}
