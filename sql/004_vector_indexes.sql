-- HNSW cosine indexes for the embedding columns.
--
-- The specification declares the columns as untyped `vector`, and that stays: vectors of several
-- embedders (of different dimensions) can live side by side, tagged by *_embedding_model. HNSW needs
-- a fixed dimension, so each index covers one embedder: an expression cast to its dimension,
-- restricted by a partial predicate to that embedder's rows (the pattern pgvector's README gives for
-- mixed dimensions). Queries repeat the same cast and predicate so the planner can use the index.
-- A new embedder, or a new version of one, gets its own migration with its own pair of indexes.
--   hashing@1  1536 dims (the offline default)
--   minilm@1    384 dims (all-MiniLM-L6-v2, optional)
--   openai@1   1536 dims (OpenAI-compatible endpoints)
SET LOCAL ROLE clay_owner;

CREATE INDEX IF NOT EXISTS executions_embedding_hashing1_hnsw ON executions
  USING hnsw ((request_embedding::vector(1536)) vector_cosine_ops)
  WHERE request_embedding_model = 'hashing@1';
CREATE INDEX IF NOT EXISTS executions_embedding_minilm1_hnsw ON executions
  USING hnsw ((request_embedding::vector(384)) vector_cosine_ops)
  WHERE request_embedding_model = 'minilm@1';
CREATE INDEX IF NOT EXISTS executions_embedding_openai1_hnsw ON executions
  USING hnsw ((request_embedding::vector(1536)) vector_cosine_ops)
  WHERE request_embedding_model = 'openai@1';

CREATE INDEX IF NOT EXISTS routing_rules_embedding_hashing1_hnsw ON routing_rules
  USING hnsw ((request_embedding::vector(1536)) vector_cosine_ops)
  WHERE request_embedding_model = 'hashing@1';
CREATE INDEX IF NOT EXISTS routing_rules_embedding_minilm1_hnsw ON routing_rules
  USING hnsw ((request_embedding::vector(384)) vector_cosine_ops)
  WHERE request_embedding_model = 'minilm@1';
CREATE INDEX IF NOT EXISTS routing_rules_embedding_openai1_hnsw ON routing_rules
  USING hnsw ((request_embedding::vector(1536)) vector_cosine_ops)
  WHERE request_embedding_model = 'openai@1';

CREATE INDEX IF NOT EXISTS systems_capabilities_hashing1_hnsw ON systems
  USING hnsw ((capabilities_embedding::vector(1536)) vector_cosine_ops)
  WHERE capabilities_embedding_model = 'hashing@1';
CREATE INDEX IF NOT EXISTS systems_capabilities_minilm1_hnsw ON systems
  USING hnsw ((capabilities_embedding::vector(384)) vector_cosine_ops)
  WHERE capabilities_embedding_model = 'minilm@1';
CREATE INDEX IF NOT EXISTS systems_capabilities_openai1_hnsw ON systems
  USING hnsw ((capabilities_embedding::vector(1536)) vector_cosine_ops)
  WHERE capabilities_embedding_model = 'openai@1';
