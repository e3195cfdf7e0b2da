from twinstream.cli import app

app(prog_name="twinstream")
