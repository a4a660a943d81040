import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { StowageConfig } from './load.js';

/**
 * With no configuration file Stowage protects a small demo application, so that a first run
 * shows the whole cycle (backup, list, restore) without touching anything of the user's.
 * Created once; later runs leave it (and any changes made to it) alone.
 */
export function ensureDemoApp(config: StowageConfig): { created: boolean; path: string } {
  const root = path.join(config.dataDir, 'demo-app');
  if (fs.existsSync(path.join(root, 'data.db'))) return { created: false, path: root };
  fs.mkdirSync(path.join(root, 'uploads'), { recursive: true });
  fs.mkdirSync(path.join(root, 'logs'), { recursive: true });
  fs.writeFileSync(path.join(root, 'config.json'), `${JSON.stringify({ siteName: 'Demo app', theme: 'light', maxUploadMb: 20 }, null, 2)}\n`);
  fs.writeFileSync(path.join(root, 'uploads', 'welcome.md'), '# Welcome\n\nThis folder stands in for your application data. Stowage backs it up.\n');
  fs.writeFileSync(path.join(root, 'logs', 'app.log'), `${new Date().toISOString()} demo app created (logs are excluded from backups)\n`);
  const db = new Database(path.join(root, 'data.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL)');
    const insert = db.prepare('INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)');
    db.transaction(() => {
      for (let i = 1; i <= 50; i++) insert.run(`Note ${i}`, `Body of demo note ${i}.`, new Date().toISOString());
    })();
  } finally {
    db.close();
  }
  return { created: true, path: root };
}
