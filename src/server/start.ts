import type { FastifyInstance } from 'fastify';
import type { JobRunner } from '../engine/job-thread.js';
import { Stowage } from '../engine/stowage.js';
import { createEngineScheduler } from '../schedule/engine-scheduler.js';
import { MIN_BACKUP_KEY_LENGTH, buildServer, parseHttpAddress, type ServerOptions } from './server.js';
import { prettyStdout } from './log-format.js';
import { DEMO_MESSAGE } from './routes/system.js';

export interface StartOptions extends ServerOptions {
  /** host:port; default: --http, STOWAGE_HTTP, server.http in the configuration, 127.0.0.1:8090. */
  http?: string;
  /** Lines for the person who started the server (setup link, demo notice); default stderr. */
  notice?: (line: string) => void;
  /** Run the schedules (backups, verification, drills) from the settings; default true. */
  scheduler?: boolean;
}

export interface RunningServer {
  app: FastifyInstance;
  jobs: JobRunner;
  url: string;
  close(): Promise<void>;
}

/**
 * Where the server listens: --http, else STOWAGE_HTTP (an empty one counts as unset), else
 * server.http from the configuration, whose default is 127.0.0.1:8090 (loopback only).
 */
export function listenAddress(flag: string | undefined, env: NodeJS.ProcessEnv, config: { server: { http: string } }): { host: string; port: number } {
  return parseHttpAddress(flag || env.STOWAGE_HTTP || config.server.http);
}

/**
 * Starts the server on an open engine: applies STOWAGE_ADMIN_EMAIL/PASSWORD, prints the
 * one-time setup link while no superuser exists, says whether the export endpoint is on and
 * whether the demo default is in use, then listens.
 */
export async function startServer(stowage: Stowage, options: StartOptions = {}): Promise<RunningServer> {
  const notice = options.notice ?? ((line: string) => process.stderr.write(`${line}\n`));
  const { app, context } = await buildServer(stowage, options);
  const { auth } = context;

  const adminEmail = process.env.STOWAGE_ADMIN_EMAIL;
  const adminPassword = process.env.STOWAGE_ADMIN_PASSWORD;
  if (adminEmail && adminPassword) {
    const { created } = await auth.upsertSuperuser(adminEmail, adminPassword);
    app.log.info(`superuser ${adminEmail} ${created ? 'created' : 'checked'} from STOWAGE_ADMIN_EMAIL / STOWAGE_ADMIN_PASSWORD`);
  } else if (adminEmail || adminPassword) {
    app.log.warn('set both STOWAGE_ADMIN_EMAIL and STOWAGE_ADMIN_PASSWORD to create a superuser at start; one alone is ignored');
  }

  const raw = process.env.STOWAGE_BACKUP_KEY;
  if (!context.backupKey) {
    app.log.info(
      raw
        ? `backup-key export (POST /api/backups/export) is off: STOWAGE_BACKUP_KEY is ${raw.length} characters, it needs at least ${MIN_BACKUP_KEY_LENGTH}`
        : 'backup-key export (POST /api/backups/export) is off: STOWAGE_BACKUP_KEY is not set',
    );
  } else {
    app.log.info('backup-key export (POST /api/backups/export) is on');
  }
  if (stowage.usingDefaultConfig) app.log.warn(DEMO_MESSAGE.replace('<dataDir>', stowage.config.dataDir));

  const { host, port } = listenAddress(options.http, process.env, stowage.config);
  await app.listen({ host, port });
  const address = app.server.address();
  const boundPort = typeof address === 'object' && address ? address.port : port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${boundPort}`;
  const base = (stowage.config.server.publicUrl ?? url).replace(/\/+$/, '');

  const scheduler = options.scheduler === false ? null : createEngineScheduler(stowage, context.jobs, { log: (level, message) => app.log[level](message) });
  if (scheduler) {
    scheduler.start();
    app.log.info(`schedules: ${scheduler.describe()}`);
  }

  notice(`Stowage ${url}  (API /api, OpenAPI /api/openapi.json, health /api/health)`);
  if (auth.countSuperusers() === 0) {
    // Printed for the operator only, never through the request log; valid once, for one hour.
    const token = auth.createSetupToken();
    notice('');
    notice('No superuser yet. Create the first one within the hour with this one-time link:');
    notice(`  ${base}/setup?token=${token}`);
    notice('or run: stowage superuser create EMAIL (or set STOWAGE_ADMIN_EMAIL and STOWAGE_ADMIN_PASSWORD).');
    notice('');
  }

  return {
    app,
    jobs: context.jobs,
    url,
    close: async () => {
      scheduler?.stop();
      await app.close();
    },
  };
}

/** Opens the engine from the configuration and serves until SIGINT/SIGTERM. */
export async function serveForever(options: StartOptions & { configPath?: string } = {}): Promise<void> {
  const stowage = await Stowage.open({ configPath: options.configPath });
  const logger = options.logger ?? (process.stdout.isTTY ? { stream: prettyStdout } : true);
  const server = await startServer(stowage, { ...options, logger });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      process.stderr.write('Stopping now. An interrupted restore is rolled back at the next start.\n');
      process.exit(130);
    }
    stopping = true;
    const job = stowage.runningJob ?? server.jobs.runningJob;
    if (job) process.stderr.write(`${signal}: waiting for the running ${job.kind}${job.key ? ` of ${job.key}` : ''} to finish (press Ctrl-C again to stop now)...\n`);
    await server.close(); // waits for the job (see buildServer)
    stowage.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
