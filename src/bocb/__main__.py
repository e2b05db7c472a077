from bocb.cli import entry

entry()
