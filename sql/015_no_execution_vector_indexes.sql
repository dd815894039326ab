-- Nothing searches executions by vector: the router searches the rules' prototypes, the learner
-- reads executions in bulk. The three HNSW indexes of 004 on executions.request_embedding only made
-- every embedding write about twenty times slower (measured: 828 rows/s with them, 16,030 without).
-- The rules' and systems' vector indexes stay.
SET LOCAL ROLE clay_owner;

DROP INDEX IF EXISTS public.executions_embedding_hashing1_hnsw;
DROP INDEX IF EXISTS public.executions_embedding_minilm1_hnsw;
DROP INDEX IF EXISTS public.executions_embedding_openai1_hnsw;
