/** The commented stowage.yaml that `stowage init` writes. */
export function configTemplate(appName: string): string {
  return `# Stowage configuration. Every field is optional unless marked required.
# Values may read the environment: password: \${MY_SECRET}
# Check it with: stowage show-config

# Catalogue, temporary files and the restore journal live here.
dataDir: ./stowage-data

# Where archives are kept. Default: <dataDir>/backups
storage:
  type: local
  # path: /var/backups/${appName}
# or an S3 bucket (AWS, MinIO, R2, Ceph, ...):
# storage:
#   type: s3
#   bucket: my-backups
#   prefix: ${appName}/
#   region: eu-west-1
#   endpoint: https://s3.eu-west-1.amazonaws.com   # omit for AWS; http://127.0.0.1:9000 for MinIO
#   forcePathStyle: false                           # true for most self-hosted servers
#   accessKeyId: \${S3_ACCESS_KEY_ID}
#   secretAccessKey: \${S3_SECRET_ACCESS_KEY}
# With S3 each archive is written to <dataDir>/outbox first and kept there until S3 has it.

# Encrypt every backup (age format; the age tool decrypts it too). Public keys: the server can
# write backups it cannot read; make a pair with "stowage keygen -o ~/stowage.key".
# encryption:
#   recipients: ["age1..."]
#   # or: passphrase: \${BACKUP_PASSPHRASE}

# Recorded in every backup's manifest (hostname is added automatically).
app:
  name: ${appName}
  version: "1.0.0"              # or: versionCommand: "myapp --version"
  labels: {}                    # e.g. { model: "x1", serial: "ABC123" }

# What to back up. Each source becomes a folder of that name in the archive.
sources:
  - name: files                 # required, a-z 0-9 _ - .
    kind: dir                   # a folder
    path: ./data                # required
    exclude:                    # Python fnmatch rules, relative to path; "*" also matches "/"
      - logs                    # a folder rule excludes everything below it
      - "*.tmp"
  # - name: db
  #   kind: sqlite              # consistent snapshot of a live SQLite database
  #   path: ./data/app.db
  # - name: pg
  #   kind: postgres            # pg_dump (custom format, a consistent snapshot); restore: pg_restore, one transaction
  #   url: postgres://app@db.example:5432/app?sslmode=require   # postgres:// or postgresql://
  #   passwordEnv: APP_DB_PASSWORD  # the NAME of a variable holding the password (never in the file or on a command line)
  #   schemas: []               # only these (pg_dump patterns, e.g. [public, "app_*"]); default: all
  #   excludeSchemas: []        # e.g. [audit]
  #   tables: []                # only these, e.g. [public.users, "app.*"]
  #   excludeTables: []         # e.g. [public.sessions]
  #   # binDir: /usr/lib/postgresql/16/bin   # default: the newest /usr/lib/postgresql/<N>/bin, else PATH

# Rules applied to every dir source (Stowage's own dataDir is always excluded).
excludes: []

restore:
  enabled: true                 # env STOWAGE_RESTORE_UNSUPPORTED=true turns restore off
  versionPolicy: same-or-older  # any | same-or-older | same (app version of backup vs now; PostgreSQL: server major version)
  safetyBackup: true            # back up the current state before restoring over it
  keepPrevious: false           # keep the replaced files, dated, next to the target

compression:
  level: 1                      # 1 fastest (default) .. 9 smallest; incompressible files are always stored

# Backup points: after each backup of a dir source, push its files to Git or S3 (docs/OFFSITE.md).
# points:
#   - name: config-history
#     source: files
#     method: git               # or s3 (url: https://s3.<region>.amazonaws.com/bucket/folder)
#     url: https://git.example.com/ops/app-config.git
#     username: stowage
#     password: \${GIT_TOKEN}
#     ignore: ["*.log"]

# "stowage serve": the REST API (docs/API.md). --http and STOWAGE_HTTP override http.
server:
  http: 127.0.0.1:8090          # host:port; 0.0.0.0:8090 to listen on every interface
  corsOrigins: []               # browser origins allowed to call the API; none by default
  maxUploadSize: 10GB           # largest archive POST /api/backups/upload accepts
  maxJsonSize: 1MB              # largest JSON request body
  trustProxy: false             # true behind a reverse proxy (client IPs from X-Forwarded-For)
  # publicUrl: https://backup.example.com   # used in links the server prints
`;
}
