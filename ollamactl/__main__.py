from ollamactl.cli import main

main()
