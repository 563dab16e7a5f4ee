from tfjoint.cli import run_main

run_main()
