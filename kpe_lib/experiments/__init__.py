"""Chapter studies: the computations of one chapter each, named after its notebook.

``kpe_lib.experiments.<slug>`` serves ``notebooks/NN_<slug>.md`` alone (for example
:mod:`kpe_lib.experiments.celeba_kts` serves ``notebooks/04_celeba_kts.md``). They build on the core and
the building blocks, are tested like the rest, and are not part of the public API: their names may
change with their chapter. A chapter's stamp covers its own study module only, so editing one
re-executes that chapter alone.
"""
