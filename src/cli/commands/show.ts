import type { Command } from 'commander';
import { formatBytes, formatCount } from '../format.js';
import { engineAction, addKeyOptions } from '../runtime.js';

export function registerShow(program: Command): void {
  addKeyOptions(program.command('show'))
    .argument('<key|file>', 'a backup key from "stowage list", or the path of an archive')
    .description('show a backup\'s manifest: sources, files, sizes, app version, host')
    .option('--entries', 'also list every entry')
    .option('--json', 'print the manifest summary as one JSON result line (with --entries, every entry)')
    .addHelpText('after', '\nExamples:\n  $ stowage show app_20250101120000.zip\n  $ stowage show ./downloaded.zip --entries')
    .action(
      engineAction(async (out, stowage, target: string, opts: { entries?: boolean }) => {
        const manifest = await stowage.readManifest(target);
        const { entries, ...summary } = manifest;
        out.result({ ok: true, manifest: opts.entries ? manifest : { ...summary, entryCount: entries.length } });
        out.info(`Backup ${manifest.key}${manifest.description ? `: ${manifest.description}` : ''}`);
        out.info(`  created     ${manifest.createdAt} (${manifest.trigger}) on host ${manifest.hostname}`);
        out.info(`  app         ${manifest.app.name} ${manifest.app.version}${Object.keys(manifest.app.labels).length ? `  ${Object.entries(manifest.app.labels).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}`);
        out.info(`  made by     Stowage ${manifest.stowage.version}, format ${manifest.format} v${manifest.formatVersion}`);
        out.info('  sources:');
        for (const s of manifest.sources) {
          out.info(`    ${s.name.padEnd(12)} ${s.kind.padEnd(7)} ${formatCount(s.files)} files, ${formatBytes(s.bytes)}  from ${s.path}${s.excludes.length ? `  excluding ${s.excludes.join(', ')}` : ''}`);
        }
        if (manifest.warnings.length) {
          out.info(`  warnings (${manifest.warnings.length}):`);
          for (const w of manifest.warnings) out.info(`    ${w.path}: ${w.reason}`);
        }
        if (opts.entries) {
          for (const e of entries) out.info(`  ${e.mode} ${String(e.size).padStart(12)} ${e.mtime}  ${e.path}`);
        }
      }),
    );
}
