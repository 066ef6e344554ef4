from ebpf_otlp.cli import main

main()
