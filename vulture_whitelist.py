"""Names vulture cannot see used: frameworks call them, templates and the database read them.

`make lint` runs vulture over maild, tests and bench with this file (vulture only parses it;
``_`` stands for any object). Add a name only when something outside our Python uses it.
"""

# aiosmtpd calls the handler hooks and reads the protocol's class attributes.
_.handle_MAIL  # maild/ingest/smtp.py
_.handle_RCPT  # maild/ingest/smtp.py, tests' relays
_.handle_exception  # maild/ingest/smtp.py
line_length_limit  # maild/ingest/smtp.py

# html.parser.HTMLParser, prometheus_client and pytest call these.
_.handle_data  # bench/html_nesting.py
_.collect  # maild/ops/metrics.py
pytest_report_header  # tests/conftest.py
pytestmark  # tests/test_inbound_queue.py

# aiohttp's TCPSite reads them: the listening server, the bound port.
_._server  # maild/web/guard.py
_._bound_port  # maild/web/guard.py

# The runner calls a stage's optional hooks by name (Pipeline._tell, pipeline/base.py Stage).
_.ahead  # maild/pipeline/incident.py
_.rolled_back  # maild/pipeline/incident.py

# SQLAlchemy: a pysqlite connection attribute, event listeners by decorator.
_.isolation_level  # maild/store/db.py
_begin  # maild/store/db.py
_checkout  # maild/store/db.py
_committed  # maild/replies/tally.py
_rolled_back  # maild/replies/tally.py, maild/knowledge/index.py
_before_commit  # maild/knowledge/index.py

# Columns kept for operators and reports (SQL reads them, Python only writes).
last_customer_at  # maild/store/models.py
sent_at  # maild/store/models.py
started_at  # maild/store/models.py

# Fields the Jinja templates read.
age  # maild/ops/digest.py Line, templates/*/_lines.txt.j2 and board/queue.html.j2
updated  # maild/web/kb.py Shown, templates/*/kb_list.html.j2

# The vocabulary (maild/tickets/words.py): members that config, commands or the database give
# as strings; each is one of the words even when no code names it.
_.QUESTION
_.PROBLEM
_.TASK
_.LOW
_.NORMAL
_.HIGH
_.URGENT
_.GOOD
