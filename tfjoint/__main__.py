from tfjoint.app.cli import run_main

run_main()
