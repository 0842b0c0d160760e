"""Backups (S8) in the backup location: PostgreSQL base backups, its archived WAL, copies of
the blob store's objects, and the deletion journal.

The location is a blob store of its own: `backups/` under the configured S3 store's
prefix, or the folder data_dir/backups. Its keys (ids only, as storage/blobs/names.py
wants them):

    base/<backup id>/part-0000 …   pg_basebackup's tar stream (gzip), in 32 MiB parts
    base/<backup id>/wal-0000 …    the WAL of a self-contained backup (`-X stream`)
    base/<backup id>/blobs         the blob keys and sizes the backup holds (JSON)
    base/<backup id>/manifest      written last: a backup without one is unfinished
    wal/<system id>/<segment>      archive_command's copies, gzip; names lower-cased
    blobs/<blob key>               one copy of each recording object, shared by manifests
    journal/<time>-<random>        deletions and erasures, written before their commit

A module per part (location, wal, base, copies, journal, database); this package names
what the use cases call. Run as a program (`python -m storage.backups archive-wal URL %p
%f`), it is the embedded cluster's archive_command (wal.py).
"""

from storage.backups.base import (
    BaseBackup,
    base_backup,
    extract,
    finish_recovery,
    prepare_external,
    write_recovery,
)
from storage.backups.copies import copy_all, copy_key, copy_object, prune_blob_copies
from storage.backups.database import (
    ArchiverState,
    ServerFacts,
    adopt_database,
    archiver_state,
    archiving_is_on,
    in_recovery,
    live_recording_ids,
    personal_data_held,
    recordings_with_audio,
    replayed_until,
    server_facts,
    switch_wal,
)
from storage.backups.journal import DeletionJournal, JournalEntry, JournalKind
from storage.backups.location import (
    BackupError,
    BackupLocation,
    BackupMethod,
    Manifest,
    Part,
    blobs_of,
    delete_backup,
    list_backups,
    local_folder,
    location_url,
    new_backup_id,
    open_location,
    read_whole,
    unfinished_backups,
    write_manifest,
)
from storage.backups.wal import (
    archive_command,
    archive_reads,
    fetch_wal,
    prune_wal,
    segment_name,
    segment_position,
    system_identifier,
    wal_key,
    wal_name,
)

__all__ = [
    "ArchiverState",
    "BackupError",
    "BackupLocation",
    "BackupMethod",
    "BaseBackup",
    "DeletionJournal",
    "JournalEntry",
    "JournalKind",
    "Manifest",
    "Part",
    "ServerFacts",
    "adopt_database",
    "archive_command",
    "archive_reads",
    "archiver_state",
    "archiving_is_on",
    "base_backup",
    "blobs_of",
    "copy_all",
    "copy_key",
    "copy_object",
    "delete_backup",
    "extract",
    "fetch_wal",
    "finish_recovery",
    "in_recovery",
    "list_backups",
    "live_recording_ids",
    "local_folder",
    "location_url",
    "new_backup_id",
    "open_location",
    "personal_data_held",
    "prepare_external",
    "prune_blob_copies",
    "prune_wal",
    "read_whole",
    "recordings_with_audio",
    "replayed_until",
    "segment_name",
    "segment_position",
    "server_facts",
    "switch_wal",
    "system_identifier",
    "unfinished_backups",
    "wal_key",
    "wal_name",
    "write_manifest",
    "write_recovery",
]
