# The wacall image plus the PostgreSQL driver (the `postgres` extra), which requirements.lock does not pin
# yet. Build the wacall image first (`docker build -t wacall .` in the repository root); deploy/compose.yaml
# then builds this one.
FROM wacall
USER root
RUN pip install --no-cache-dir "psycopg[binary]>=3.2,<4"
USER 10001:10001
