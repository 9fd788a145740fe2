"""The feature cache: per-clip arrays computed once, stored memory-mapped, reused by every training run.

One folder holds one feature set of one corpus::

    <cache_dir>/<manifest name>/<spec name>-<key[:16]>/
        meta.json            what the cache is (spec, backbone, shapes, versions); written LAST, so its
                             presence means "complete"
        index.json           per clip, in manifest order: clip_id, sha1 of the audio, shard, offset, length
        shard-00000.npy ...  clips of shape (T_i, *feature_shape) concatenated along axis 0 (.npy files,
                             readable by ``np.load(mmap_mode="r")``)
        shard-00000.crc.json per shard: the crc32 of each of its clips (written before the shard's rename)
        verified.json        a stamp: (size, mtime, ctime, inode) of every shard when its checksums last held
        plan.json            only while building: the shard plan, so an interrupted build resumes
        build.lock           the lock parallel jobs take before building

``key`` is the sha256 of a canonical JSON of everything that changes the numbers (corpus content hash,
feature spec, backbone identity): a different corpus or config gets a different folder and never
mixes with an old one.  Shards are written as ``*.partial`` and renamed when complete, so a shard
file with its final name is always whole; a crash leaves finished shards to be reused and a partial
one to be discarded.

Checksums: every clip's bytes get a crc32 when written (in the writer threads, ~2 GB/s, no read-back),
kept in index.json (itself sha256-checked by meta.json) and in a small sidecar per shard.  Opening a
cache compares each shard's ``stat`` with the stamp in verified.json and hashes only shards whose
size, mtime, ctime or inode changed since they were last verified (a same-size overwrite changes
mtime and ctime), so a training start-up costs a few ``stat`` calls and a damaged shard is named
before any batch is read.  ``verify="full"`` hashes everything (crc32 runs at ~1.8 GB/s per core
here: a 5.3 GB cache in about 3 s from the page cache, longer from disk).  crc32 detects accidental
damage (bit flips, partial overwrites); it is not a defence against a deliberate forger, who could
rewrite index.json and meta.json too.  A damaged cache is never rebuilt silently: the error says
how to ask for it (``rebuild=true``), and then only the damaged shards are computed again.

The package, one job a module: ``format`` (file names, keys, shard files and checksums), ``reader``
(:class:`~wav2emo.features.cache.reader.FeatureCache`), ``writer`` (:class:`~wav2emo.features.cache.writer.CacheBuilder`,
``build_from_arrays``), ``maintenance`` (rebuilds of damaged shards, stale temporaries). Import from them.
"""
