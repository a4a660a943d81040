import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI (npm test builds first, see "pretest"). Tests run it as a real process. */
export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/bin.cjs');

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (for --json runs); lines that are not JSON are skipped. */
  lines: Array<Record<string, unknown>>;
  /** The last `{"type":"result"}` or `{"type":"error"}` line. */
  result: Record<string, unknown> | undefined;
}

function parseLines(stdout: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of stdout.split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not JSON
    }
  }
  return out;
}

function toResult(status: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string): CliResult {
  const lines = parseLines(stdout);
  const result = [...lines].reverse().find((l) => l.type === 'result' || l.type === 'error');
  return { status, signal, stdout, stderr, lines, result };
}

/** Runs `stowage ...args` synchronously in `cwd`. */
export function stowage(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, input?: string): CliResult {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (npm test does it)`);
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    input,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  return toResult(r.status, r.signal, r.stdout, r.stderr);
}

/** Async variant, for tests that do other work while the CLI runs. */
export function stowageAsync(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve(toResult(status, signal, stdout, stderr)));
  });
}
