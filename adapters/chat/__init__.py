"""What every chat platform shares, written once: answering and streaming (answering.py,
streaming.py), ingest with progress (ingest.py), the slash commands (commands.py), the markup
of answers and sources (markup.py), thread memory (memory.py) and the task set and locks
(tasks.py). A platform's package only translates its events and renders its messages."""
