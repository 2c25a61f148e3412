from ollamad.cli import main

main()
