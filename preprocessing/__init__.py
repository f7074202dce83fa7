"""The offline stage: captioned images -> webdataset shards -> frozen encoders -> latent dataset.

    tables.py    read URL/caption tables (csv, tsv, parquet, jsonl), check columns
    download.py  URL tables -> shards with img2dataset, with a success/failure summary
    folder.py    a local folder of captioned images -> shards
    emoji.py     the bundled OpenMoji emoji (CC BY-SA 4.0) -> shards
    iconify.py   Iconify emoji sets from npm (Twemoji, Noto, Fluent ...) rasterised with resvg -> shards
    fashion_mnist.py  Fashion-MNIST idx files -> class-labelled shards (train and test apart)
    recaption.py colour words written in front of captions that name none (shards -> shards)
    shards.py    the shard format shared by every source and by encode
    encode.py    shards -> per-shard work files (resumable, accelerate-aware)
    shard_encode.py  one shard through the VAE + text encoder, its images sized to one or more buckets
    merge.py     work files -> the memory-mappable dataset of tld.data.format
    parts.py     encode --layout parts: shard groups -> parts + manifest (tld.data.parts), no merge
    buckets.py   encode --buckets: bucket sizes checked, one part per bucket, meta.json's bucket list

May import tld.encoders and tld.data.format only (see docs/internals.md). Heavy dependencies
(img2dataset, encoders) are imported inside the functions that need them.
"""
