"""FileStore: puppetserver's cadir, the SQLite index, group commit and the key-file signer."""
