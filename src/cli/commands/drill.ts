import type { Command } from 'commander';
import type { DrillResult } from '../../engine/drill.js';
import { formatBytes, formatCount, formatDuration } from '../format.js';
import { engineAction, EXIT, addKeyOptions } from '../runtime.js';

/** What to do about a failed drill, from what failed. */
function advice(result: DrillResult): string[] {
  const text = result.problems.join('\n');
  const lines: string[] = [];
  if (/SHA-256|damaged|cannot be read back|bytes in the archive|not a readable ZIP/.test(text)) {
    lines.push(`The stored archive is damaged: "stowage verify ${result.key}" lists every damaged entry. Storage that changes files needs checking (disk, copy tool).`);
  }
  if (/integrity check/.test(text)) {
    lines.push(`A SQLite database was already damaged when it was backed up: check the live one with  sqlite3 PATH "PRAGMA integrity_check"  and repair it (.recover) before relying on new backups.`);
  }
  if (/free space/.test(text)) lines.push('The drill needs as much free space in the data folder as the backup holds; free some and drill again.');
  lines.push(`Do not count on ${result.key} for a restore: make a new backup ("stowage backup") and drill that one ("stowage drill").`);
  return lines;
}

export function registerDrill(program: Command): void {
  addKeyOptions(program.command('drill'))
    .argument('[key]', 'a backup key from "stowage list" (default: the newest completed backup)')
    .description('restore drill: restore a backup into a scratch folder, compare it with its manifest, check its SQLite databases, and record the result')
    .option('--json', 'JSON lines: progress, then one result')
    .addHelpText(
      'after',
      `
What happens:
  1. every source of the backup is restored into a scratch folder inside the data folder
     (<dataDir>/tmp/...), checking every SHA-256 as a restore does;
  2. the restored files are read back and compared with the manifest: every file present
     with its size, SHA-256 and permissions, every symlink with its target, nothing extra;
  3. every SQLite database is opened and checked with PRAGMA integrity_check, and every
     PostgreSQL dump read with pg_restore --list (no database is connected to);
  4. the scratch folder is removed, and the result is recorded on the backup
     (drilledAt, drillStatus, drillMessage in "stowage list --json").
  The configured data, the restore status and the application are not touched (no restore
  hooks run), so a drill also runs when restore is disabled. It needs as much free space
  in the data folder as the backup holds.

Examples:
  $ stowage drill
  $ stowage drill app_20250101120000.zip
  $ stowage drill --json | tail -n 1 | jq .ok

Exit status: 0 the backup restores correctly, 1 it does not (or the drill could not run).`,
    )
    .action(
      engineAction(async (out, stowage, key: string | undefined) => {
        const result = await stowage.drill(key, { trigger: 'manual', onProgress: (p) => out.progress('drill', p) });
        out.result({ ...result });
        if (result.ok) {
          out.info(`OK: ${result.key} restores correctly (${formatDuration(result.durationMs)}).`);
          for (const s of result.sources) out.info(`  ${s.name.padEnd(12)} ${s.kind.padEnd(7)} ${formatCount(s.files)} files, ${formatBytes(s.bytes)} restored and compared${s.kind === 'sqlite' ? ', integrity_check ok' : s.kind === 'postgres' ? ', pg_restore --list ok' : ''}`);
          out.info(`  ${formatCount(result.files)} files, ${formatBytes(result.bytes)} in all; the scratch copy was removed and the configured data was not touched.`);
          for (const w of result.warnings.slice(0, 20)) out.info(`  note: ${w}`);
          return EXIT.OK;
        }
        if (!out.json) {
          process.stderr.write(`FAILED: ${result.key} does not restore correctly (${formatDuration(result.durationMs)}):\n`);
          for (const p of result.problems.slice(0, 50)) process.stderr.write(`  ${p}\n`);
          if (result.problems.length > 50) process.stderr.write(`  ... and ${result.problems.length - 50} more (--json lists up to 200)\n`);
          process.stderr.write('What to do:\n');
          for (const line of advice(result)) process.stderr.write(`  ${line}\n`);
        }
        return EXIT.ERROR;
      }),
    );
}
