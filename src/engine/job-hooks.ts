import { errorMessage } from '../errors.js';
import type { EngineContext } from './context.js';
import { runHooks, type HookContext, type HookPhase } from './hooks.js';

/**
 * Runs the configured command hooks of one phase for a job: output goes to the job log, an
 * essential hook that fails throws HOOK_FAILED (the job stops), optional failures come back as
 * warnings. After-hooks cannot undo a finished job, so their callers treat every failure of
 * theirs as a warning (see `runAfterHooks`).
 */
export async function runJobHooks(ctx: EngineContext, phase: HookPhase, context: Omit<HookContext, 'dataDir'>): Promise<string[]> {
  const hooks = ctx.config.hooks[phase];
  if (!hooks.length) return [];
  ctx.jobLog(`${phase}: ${hooks.length} hook${hooks.length === 1 ? '' : 's'}`);
  const outcomes = await runHooks(phase, hooks, { ...context, dataDir: ctx.config.dataDir }, { log: (l) => ctx.jobLog(`${phase}[${l.hook}] ${l.stream}: ${l.text}`) });
  for (const o of outcomes) ctx.jobLog(`${phase}[${o.index}] ${o.command}: ${o.ok ? 'ok' : `failed (${o.error})`} in ${o.durationMs} ms`);
  return outcomes.filter((o) => !o.ok).map((o) => `${phase} hook ${o.command} failed (${o.mode}): ${o.error}`);
}

/** After-hooks: every failure is a warning (logged), never an exception. */
export async function runAfterHooks(ctx: EngineContext, phase: 'afterBackup' | 'afterRestore', context: Omit<HookContext, 'dataDir'>): Promise<string[]> {
  try {
    return await runJobHooks(ctx, phase, context);
  } catch (err) {
    ctx.jobLog(`${phase}: ${errorMessage(err)}`);
    return [errorMessage(err)];
  }
}
