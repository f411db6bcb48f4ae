"""What every layer of medssl may import, and that imports no layer above it.

* :mod:`medssl.core.atomic`: the one writer of files a user keeps (temporary file + ``os.replace``,
  with the umask's permissions);
* :mod:`medssl.core.runtime`: process settings (allocator, threads, rank), bf16 autocast, memory
  format, the bf16-Conv3d-on-CPU warning;
* :mod:`medssl.core.weights`: weights-only checkpoint loading, the one key matcher for foreign
  state dicts, input-channel adaptation;
* :mod:`medssl.core.schedules`: the warm-up + cosine (poly, constant) learning-rate factor;
* :mod:`medssl.core.paths`: the cache folder (``$MEDSSL_CACHE``).

A test checks that nothing here imports ``medssl.data``, ``nets``, ``methods``, ``engines``,
``inference``, ``medmnist`` or ``eval``, nor Lightning.
"""
