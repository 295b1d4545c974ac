from reidbench.cli import main

main()
